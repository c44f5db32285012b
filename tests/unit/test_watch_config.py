"""The settings for watching runs: ``loggers`` (a list) and ``sweep_metric``, from both doors."""

import dataclasses

import pytest

from trainer.config.compose import compose_config
from trainer.config.parse import overrides_layer, yaml_layer
from trainer.config.schema import TrainingConfig
from trainer.errors import ConfigError, ConfigValueError


def test_defaults_report_to_events_jsonl_only_and_sweeps_minimise_the_final_val_loss():
    config = TrainingConfig()
    assert config.loggers == [] and config.sweep_metric == "final_val_loss"


def test_loggers_from_a_command_line_and_from_a_file(tmp_path):
    assert compose_config([overrides_layer(["loggers=[tensorboard,csv]"])]).loggers == ["tensorboard", "csv"]
    assert compose_config([overrides_layer(["loggers=[]"])]).loggers == []
    path = tmp_path / "run.yaml"
    path.write_text("loggers: [mlflow, wandb]\n")
    assert compose_config([yaml_layer(str(path))]).loggers == ["mlflow", "wandb"]


def test_a_bare_name_is_refused_with_the_list_to_write():
    with pytest.raises(ConfigError, match=r"loggers='csv' has the wrong type: expected list\[str\]; write a list"):
        compose_config([overrides_layer(["loggers=csv"])])


@pytest.mark.parametrize(
    "loggers, fragment",
    [
        (["tensorbord"], "names 'tensorbord' (did you mean 'tensorboard'?): each must be one of tensorboard, mlflow"),
        (["csv", "csv"], "names a logger twice"),
    ],
)
def test_unknown_or_repeated_loggers_are_refused(loggers, fragment):
    with pytest.raises(ConfigValueError) as info:
        TrainingConfig(loggers=loggers)
    assert info.value.key == "loggers" and fragment in str(info.value) and info.value.exit_code == 2


def test_sweep_metric_is_a_summary_field():
    assert TrainingConfig(sweep_metric="final_loss").sweep_metric == "final_loss"
    with pytest.raises(ConfigValueError, match="sweep_metric='accuracy' must be one of final_val_loss, final_loss"):
        TrainingConfig(sweep_metric="accuracy")


def test_watching_a_run_does_not_change_its_hash():
    base = TrainingConfig(seed=1)
    watched = dataclasses.replace(base, loggers=["csv"], sweep_metric="final_loss")
    assert watched.config_hash() == base.config_hash()


def test_the_hydra_door_takes_a_list_override():
    from tests.unit.test_hydra_conf import composed
    from trainer.cli.hydra_app import check_overrides, requested_layer

    check_overrides(["loggers=[tensorboard,csv]"])
    with pytest.raises(ConfigError, match="loggers='csv' has the wrong type"):
        check_overrides(["loggers=csv"])
    config = composed(["loggers=[tensorboard,csv]"])
    layer = requested_layer(config, ["loggers=[tensorboard,csv]"])
    assert compose_config([layer]).loggers == ["tensorboard", "csv"]
