"""Finding NaN or infinity in what a checkpoint would hold, cheaply enough to run at every save."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def first_non_finite(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor that holds NaN or infinity, else None.

    One fused pass per tensor: aminmax, since NaN and +-inf always reach the min or the max.
    isfinite(t).all() allocates a mask as large as the tensor and was about 30x slower on a 136M
    element tensor (Qwen2.5-0.5B's embedding) on a 2-core CPU; a sum or a norm is as fast
    but overflows to inf on large finite weights. One device sync for all tensors together.
    """
    names, extremes = [], []
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and tensor.numel():
            names.append(name)
            extremes.append(torch.stack(torch.aminmax(tensor.detach())).float())
    if not extremes:
        return None
    finite = torch.isfinite(torch.stack([e.to(extremes[0].device) for e in extremes])).all(dim=1)
    if bool(finite.all()):
        return None
    return names[finite.tolist().index(False)]


def optimizer_tensors(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the optimizer's state, named after its parameter ("exp_avg of lm_head.weight")."""
    names = {id(param): name for name, param in model.named_parameters()}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                yield f"{key} of {names.get(id(param), 'a parameter')}", value
