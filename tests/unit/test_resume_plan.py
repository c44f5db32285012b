"""Planning a resume: what may change, compared by value, and a finished run."""

import pytest

from tests.conftest import tiny_config
from trainer.config.parse import overrides_layer
from trainer.errors import ConfigError
from trainer.run.execute import run_training
from trainer.run.plan import plan_run


@pytest.fixture
def finished_run(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = tiny_config(corpus_file, max_steps=3, learning_rate=1e-3, eval_cadence=None, sampling_cadence=None)
    run_training(config, run_dir, console=False)
    return run_dir


def test_a_setting_equal_in_value_but_written_as_text_is_no_change(finished_run):
    # "1e-3" on a command line is text to YAML (no dot); the run has the float 0.001.
    config, plan = plan_run([overrides_layer([f"resume={finished_run}", "learning_rate=1e-3", "max_steps=5"])])
    assert config.learning_rate == 1e-3 and plan.state["step"] == 3


def test_a_real_change_is_refused_with_the_branch_hint(finished_run):
    with pytest.raises(ConfigError, match="cannot change learning_rate when resuming") as info:
        plan_run([overrides_layer([f"resume={finished_run}", "learning_rate=2e-3", "max_steps=5"])])
    assert "--branch NEW_NAME learning_rate=" in info.value.hint


def test_resuming_a_finished_run_says_how_to_extend_it(finished_run):
    with pytest.raises(ConfigError, match="nothing to resume: the run reached step 3 and its max_steps is 3") as info:
        plan_run([overrides_layer([f"resume={finished_run}"])])
    assert "--max-steps N" in info.value.hint and info.value.exit_code == 2
