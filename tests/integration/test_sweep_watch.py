"""Sweeps end with summary.png, and a job returns its sweep_metric, so Optuna can search."""

import json

import pytest
import yaml

from tests.conftest import run_main
from tests.integration.test_hydra import TINY, sweep_dirs
from tests.unit.test_plots import png_size


def summary_lines(sweep):
    return [json.loads(line) for line in (sweep / "summary.jsonl").read_text().splitlines()]


def test_an_optuna_search_of_three_trials_minimises_the_final_val_loss(tmp_path, corpus_file):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = run_main(
        "-m",
        "hydra/sweeper=lr-dropout",
        "hydra.sweeper.n_trials=3",
        "max_steps=3",  # eval_cadence stays null: every run still ends with a validation loss
        *TINY,
        f"data_path={corpus_file}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    lines = summary_lines(sweep)
    assert sorted(line["job"] for line in lines) == [0, 1, 2]
    assert all(line["status"] == "completed" and line["final_val_loss"] > 0 for line in lines)
    for line in lines:  # each trial's values, drawn by Optuna inside the preset's ranges
        values = dict(override.split("=", 1) for override in line["overrides"])
        assert 1e-4 <= float(values["learning_rate"]) <= 1e-2 and 0.0 <= float(values["dropout"]) <= 0.3
        config = yaml.safe_load((tmp_path / line["run_dir"] / "config.yaml").read_text())
        assert config["learning_rate"] == pytest.approx(float(values["learning_rate"]))
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(lines, key=lambda line: line["final_val_loss"])
    assert results["best_value"] == pytest.approx(best["final_val_loss"])
    assert png_size(sweep / "summary.png") == (1200, 600)


def test_a_basic_sweep_draws_summary_png_and_a_failed_job_does_not_stop_it(tmp_path, corpus_file):
    shape = ["n_layers=1", "d_model=32", "d_ff=64", "max_seq_len=32", "batch_size=8"]
    result = run_main("-m", "max_steps=2", "n_heads=3,2", *shape, f"data_path={corpus_file}", cwd=tmp_path)
    assert result.returncode == 1  # one job failed
    (sweep,) = sweep_dirs(tmp_path)
    assert png_size(sweep / "summary.png") == (1200, 600)
    assert f"summary.png: {sweep.relative_to(tmp_path) / 'summary.png'}" in result.stdout


def test_without_matplotlib_the_sweep_says_so_in_one_line(tmp_path, corpus_file):
    # sitecustomize-free: a path entry whose matplotlib package fails on import
    blocker = tmp_path / "no-matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib is blocked for this test')\n")
    result = run_main(
        "-m",
        "max_steps=1",
        "seed=1,2",
        *TINY,
        f"data_path={corpus_file}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocker)},
    )
    assert result.returncode == 0, result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert not (sweep / "summary.png").exists()
    lines = [line for line in result.stderr.splitlines() if "summary.png" in line]
    assert len(lines) == 1 and 'pip install -e ".[plots]"' in lines[0]
