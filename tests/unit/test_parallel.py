"""Strategy resolution, what a resume across strategies promises, and optimizer state by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from trainer.training.distributed import Ranks
from trainer.training.fsdp import decoder_blocks
from trainer.training.optimizer_state import by_name, by_number, parameter_names
from trainer.training.parallel import DDP, FSDP, SINGLE, resolve_strategy, why_not_bit_exact


def _ranks(world_size: int) -> Ranks:
    return Ranks(rank=0, world_size=world_size, local_rank=0)


@pytest.mark.parametrize(
    "setting, world_size, strategy",
    [("auto", 1, SINGLE), ("fsdp", 1, SINGLE), ("auto", 2, DDP), ("ddp", 2, DDP), ("fsdp", 2, FSDP)],
)
def test_one_process_trains_the_whole_model_whatever_the_setting(setting, world_size, strategy):
    assert resolve_strategy(setting, _ranks(world_size)) == strategy


def test_a_resume_says_when_it_cannot_be_bit_exact_and_why():
    saved = {"strategy": FSDP, "world_size": 2}
    assert why_not_bit_exact(saved, FSDP, 2, dropout=0.1) is None
    assert why_not_bit_exact(None, FSDP, 2, dropout=0.0) is None  # an older checkpoint: nothing known
    rounding = why_not_bit_exact(saved, SINGLE, 1, dropout=0.0)
    assert rounding == (
        "this resume cannot be bit-exact (saved by FSDP on 2 ranks, resumed on 1 process): "
        "the same numbers to float rounding"
    )
    assert "dropout=0.1" in why_not_bit_exact(saved, SINGLE, 1, dropout=0.1)
    assert "saved by DDP on 2 ranks, resumed on FSDP on 2 ranks" in why_not_bit_exact(
        {"strategy": DDP, "world_size": 2}, FSDP, 2, dropout=0.1
    )


def test_optimizer_state_by_name_and_back_is_the_same_state():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(
        [{"params": [model[0].weight]}, {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0}]
    )
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    names = parameter_names(optimizer, model)
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    numbered = optimizer.state_dict()
    named = by_name(numbered, names)
    assert set(named["state"]) == set(names)
    back = by_number(named, names, optimizer)
    assert back["param_groups"] == numbered["param_groups"]
    assert all(torch.equal(back["state"][n]["exp_avg"], numbered["state"][n]["exp_avg"]) for n in range(4))


def test_a_saved_state_of_other_parameters_is_refused():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    names = parameter_names(optimizer, model)
    other = {"state": {}, "param_groups": [{**optimizer.state_dict()["param_groups"][0], "params": ["lora_A.weight"]}]}
    with pytest.raises(ValueError, match="its parameters do not match this model's"):
        by_number(other, names, optimizer)


def test_decoder_blocks_are_the_classes_a_model_names_as_never_split():
    from trainer.models.transformer import Transformer, TransformerShape

    model = Transformer(TransformerShape(50, 3, 16, 2, 32, 8, 0.0))
    blocks = decoder_blocks(model)
    assert len(blocks) == 3 and all(type(b).__name__ == "Block" for b in blocks)
    assert decoder_blocks(nn.Sequential(model)) == blocks  # found through a wrapper (a PEFT model) too
