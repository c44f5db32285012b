"""An optimizer's state keyed by parameter number (``optimizer.state_dict()``, what optimizer.pt
holds) or by parameter name (what torch.distributed.checkpoint.state_dict gives and takes,
what a sharded checkpoint holds), and the way between them: so a checkpoint of one kind
resumes into a run of the other (DDP or one process into FSDP, and back).

Numbers count the optimizer's parameters in the order of its groups; names are the model's
(``blocks.0.attn.qkv.weight``), which FSDP keeps. A tied weight has its first name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def parameter_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[str]:
    """The names of the optimizer's parameters, in the order its state dict numbers them."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]


def by_name(numbered: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``optimizer.state_dict()`` of an optimizer whose parameters are ``names``, keyed by name."""
    return {
        "state": {names[number]: state for number, state in numbered["state"].items()},
        "param_groups": [
            {**group, "params": [names[n] for n in group["params"]]} for group in numbered["param_groups"]
        ],
    }


def by_number(named: dict[str, Any], names: list[str], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A state keyed by name, as ``optimizer.load_state_dict`` takes it for ``optimizer``
    (whose parameters are ``names``). Each saved group must hold the same parameters as the
    optimizer's group in its place, or ValueError: load_state_dict pairs them by position."""
    number_of = {name: number for number, name in enumerate(names)}
    groups, start = [], 0
    saved_groups = named["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"it has {len(saved_groups)} parameter groups, this run's optimizer {len(optimizer.param_groups)}"
        )
    for saved, own in zip(saved_groups, optimizer.param_groups, strict=True):
        own_names = names[start : start + len(own["params"])]
        start += len(own["params"])
        if sorted(saved["params"]) != sorted(own_names):
            unknown = sorted(set(saved["params"]) ^ set(own_names))[:3]
            raise ValueError(f"its parameters do not match this model's (e.g. {', '.join(unknown)})")
        groups.append({**saved, "params": [number_of[name] for name in own_names]})
    state = {}
    for name, values in named["state"].items():
        if name not in number_of:
            raise ValueError(f"it has state for {name}, which this model's optimizer does not train")
        state[number_of[name]] = values
    return {"state": state, "param_groups": groups}
