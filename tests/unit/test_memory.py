"""The memory floor of a run, checked while planning: sizes that cannot fit are refused at once."""

import pytest

from tests.conftest import run_main
from trainer.config.schema import TrainingConfig
from trainer.errors import ConfigError
from trainer.run.memory import check_fits, custom_architecture, training_bytes

GB = 1 << 30


def test_the_default_model_needs_a_little_and_fits():
    config = TrainingConfig()
    parts = training_bytes(config, custom_architecture(config, vocab_size=100), world_size=1)
    assert 10 * (1 << 20) < sum(parts.values()) < 2 * GB
    check_fits(config, custom_architecture(config, 100), world_size=1, available=8 * GB)


@pytest.mark.parametrize(
    "changes, part",
    [
        ({"batch_size": 10**9}, "activations"),
        ({"max_seq_len": 1_000_000}, "activations"),
        ({"max_seq_len": 2**62}, "activations"),  # Python integers: no overflow on the way
        ({"n_layers": 2000, "d_model": 4096, "n_heads": 32, "d_ff": 16384, "max_seq_len": 64}, "weights"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_naming_the_part(changes, part):
    config = TrainingConfig(**changes)
    with pytest.raises(ConfigError, match=f"this run needs at least .* \\({part}") as info:
        check_fits(config, custom_architecture(config, 100), world_size=1, available=24 * GB)
    assert info.value.exit_code == 2 and "lower" in info.value.hint


def test_grad_accumulation_and_ranks_shrink_the_activations():
    config = TrainingConfig(batch_size=64, grad_accum_steps=4)
    arch = custom_architecture(config, 100)
    one = training_bytes(TrainingConfig(batch_size=64), arch, world_size=1)["activations"]
    assert training_bytes(config, arch, world_size=1)["activations"] == one // 4
    assert training_bytes(config, arch, world_size=2)["activations"] == one // 8


def test_fsdp_ranks_keep_a_share_of_the_state_and_one_block_gathered():
    config = TrainingConfig(n_layers=8, d_model=1024, n_heads=8, d_ff=4096)
    arch = custom_architecture(config, 100)
    state = "weights, gradients and optimizer state"
    whole = training_bytes(config, arch, world_size=8)[state]
    assert whole == arch.num_parameters * 16  # DDP: every rank keeps it all
    sharded = training_bytes(TrainingConfig(**{**vars(config), "strategy": "fsdp"}), arch, world_size=8)[state]
    assert sharded == arch.num_parameters * 16 // 8 + arch.num_parameters // 8 * 4
    alone = training_bytes(TrainingConfig(**{**vars(config), "strategy": "fsdp"}), arch, world_size=1)[state]
    assert alone == whole  # one process shards nothing


def test_a_model_too_big_for_one_rank_fits_sharded_and_the_hint_says_so():
    config = TrainingConfig(model_name="big", max_seq_len=64, batch_size=8)
    arch = custom_architecture(TrainingConfig(n_layers=32, d_model=4096, n_heads=32, d_ff=16384), 100)
    available = arch.num_parameters * 16 // 4  # a quarter of what DDP would keep on each rank
    with pytest.raises(ConfigError, match="weights, gradients and optimizer state") as info:
        check_fits(config, arch, world_size=8, available=available)
    assert "strategy=fsdp" in info.value.hint
    check_fits(TrainingConfig(**{**vars(config), "strategy": "fsdp"}), arch, world_size=8, available=available)


def test_the_command_line_refuses_before_allocating_or_making_a_directory(tmp_path, corpus_file):
    result = run_main("--data", str(corpus_file), "batch_size=1000000000", "max_seq_len=32", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "this run needs at least" in result.stderr
    assert not (tmp_path / "outputs").exists()
