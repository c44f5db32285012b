"""What a sweep's job returns: its summary line, and as a float the objective Optuna minimises."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.cli.sweep import distinguishing_labels, job_outcome
from trainer.errors import ConfigError

RESULT = SimpleNamespace(
    status="completed", run_dir=Path("multirun/d/t/0"), steps=3, final_loss=2.5, final_val_loss=2.75, wall_time_s=1.5
)


def test_a_completed_job_is_its_sweep_metric_as_a_float():
    assert float(job_outcome(RESULT)) == 2.75
    assert float(job_outcome(RESULT, sweep_metric="final_loss")) == 2.5


def test_the_summary_line_keeps_its_fields():
    assert job_outcome(RESULT).summary() == {
        "status": "completed",
        "exit_code": 0,
        "error": None,
        "run_dir": "multirun/d/t/0",
        "steps": 3,
        "final_loss": 2.5,
        "final_val_loss": 2.75,
        "wall_time_s": 1.5,
    }


def test_a_job_without_its_metric_is_no_float_and_says_why():
    unevaluated = job_outcome(SimpleNamespace(**{**vars(RESULT), "final_val_loss": None}))
    with pytest.raises(TypeError, match="final_val_loss=None \\(the run reported none\\)"):
        float(unevaluated)
    failed = job_outcome(error=ConfigError("d_model=100 must be divisible by n_heads"))
    with pytest.raises(TypeError, match="job failed: d_model=100"):
        float(failed)
    assert failed.summary()["exit_code"] == 2


def test_labels_keep_what_tells_the_jobs_apart_with_short_numbers():
    jobs = [
        ["learning_rate=0.00024156772025296256", "dropout=0.1", "max_steps=2"],
        ["learning_rate=0.003", "dropout=0.25", "max_steps=2"],
    ]
    assert distinguishing_labels(jobs) == ["learning_rate=0.0002416 dropout=0.1", "learning_rate=0.003 dropout=0.25"]
    assert distinguishing_labels([["max_steps=2"]]) == ["max_steps=2"]
