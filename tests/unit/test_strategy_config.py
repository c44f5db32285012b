"""The strategy settings: strategy (auto, ddp, fsdp) and FSDP's own two switches."""

import dataclasses

import pytest

from trainer.config.compose import ConfigLayer, compose_config
from trainer.config.schema import RESUMABLE_KEYS, TrainingConfig
from trainer.errors import ConfigValueError


def test_defaults_keep_todays_ddp():
    config = TrainingConfig()
    assert (config.strategy, config.fsdp_reshard_after_forward, config.fsdp_cpu_offload) == ("auto", True, False)


def test_fsdp_settings_from_the_command_line():
    config = compose_config([ConfigLayer("command line", {"strategy": "fsdp", "fsdp_cpu_offload": "true"})])
    assert config.strategy == "fsdp" and config.fsdp_cpu_offload is True


def test_unknown_strategy_is_refused_with_the_choices():
    with pytest.raises(ConfigValueError, match="strategy='zero3' must be one of auto, ddp, fsdp") as info:
        TrainingConfig(strategy="zero3")
    assert info.value.key == "strategy" and info.value.exit_code == 2


@pytest.mark.parametrize("key, value", [("fsdp_cpu_offload", True), ("fsdp_reshard_after_forward", False)])
@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_fsdp_switches_without_fsdp_are_refused_not_ignored(key, value, strategy):
    with pytest.raises(ConfigValueError) as info:
        TrainingConfig(strategy=strategy, **{key: value})
    assert (info.value.key, info.value.other_key) == (key, "strategy")


def test_how_the_ranks_share_the_work_may_change_on_resume_and_keeps_the_hash():
    """DDP and FSDP compute the same numbers (to float rounding), as any number of ranks does."""
    base = TrainingConfig(seed=1)
    sharded = dataclasses.replace(base, strategy="fsdp", fsdp_reshard_after_forward=False)
    assert base.config_hash() == sharded.config_hash()
    assert {"strategy", "fsdp_reshard_after_forward", "fsdp_cpu_offload"} <= RESUMABLE_KEYS
