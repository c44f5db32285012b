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


def test_validation_data_may_move_but_not_come_or_go(finished_run, tmp_path):
    held_out = tmp_path / "held-out.txt"
    held_out.write_text("some held-out text " * 50, encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot add val_data_path when resuming") as info:
        plan_run([overrides_layer([f"resume={finished_run}", f"val_data_path={held_out}", "max_steps=5"])])
    assert info.value.exit_code == 2 and "the training examples would change" in str(info.value)
    config, _ = plan_run([overrides_layer([f"resume={finished_run}", "val_data_path=null", "max_steps=5"])])
    assert config.val_data_path is None  # unchanged: no refusal
    with_validation = tmp_path / "with-validation"
    with_validation.mkdir()
    corpus = finished_run.parent / "corpus.txt"
    config = tiny_config(corpus, max_steps=3, eval_cadence=None, sampling_cadence=None, val_data_path=str(held_out))
    run_training(config, with_validation, console=False)
    moved = tmp_path / "moved.txt"
    moved.write_text(held_out.read_text(encoding="utf-8"), encoding="utf-8")
    config, _ = plan_run([overrides_layer([f"resume={with_validation}", f"val_data_path={moved}", "max_steps=5"])])
    assert config.val_data_path == str(moved)
    with pytest.raises(ConfigError, match="cannot drop val_data_path when resuming"):
        plan_run([overrides_layer([f"resume={with_validation}", "val_data_path=null", "max_steps=5"])])


def test_resuming_a_finished_run_says_how_to_extend_it(finished_run):
    with pytest.raises(ConfigError, match="nothing to resume: the run reached step 3 and its max_steps is 3") as info:
        plan_run([overrides_layer([f"resume={finished_run}"])])
    assert "--max-steps N" in info.value.hint and info.value.exit_code == 2
