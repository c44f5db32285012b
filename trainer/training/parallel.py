"""How the ranks share a run: one process, DDP or FSDP; placing the model for it; and what a
resume on another number of ranks, or with another strategy, can promise.

``strategy`` (the config's) is resolved against the ranks there are: one process trains the
whole model whatever it says, ``auto`` under torchrun is DDP.
"""

from __future__ import annotations

import torch

from trainer.config.schema import TrainingConfig
from trainer.training import distributed
from trainer.training.compiled import compile_for_training
from trainer.training.distributed import Ranks

SINGLE, DDP, FSDP = "single", "ddp", "fsdp"


def resolve_strategy(setting: str, ranks: Ranks) -> str:
    if not ranks.distributed:
        return SINGLE
    return FSDP if setting == FSDP else DDP


def place_model(
    adapter, strategy: str, device: torch.device, config: TrainingConfig, bf16: torch.dtype | None
) -> torch.dtype | None:
    """Put the adapter's model on ``device`` as ``strategy`` wants it, before the optimizer is
    made (FSDP replaces the parameters with sharded ones); return the dtype to autocast to.

    Under FSDP, bf16 is FSDP's mixed precision (weights cast per block, gradients reduced in
    fp32), so there is no autocast; the model also reaches the device block by block, as it
    is sharded, never whole. Under DDP, the loss runs through the DDP wrapper, which gives
    every rank rank 0's weights. With ``compile``, what the loss runs through is compiled
    (FSDP is refused with compile by the config)."""
    if strategy == FSDP:
        from trainer.training.fsdp import shard_model

        shard_model(
            adapter.model,
            device,
            distributed.current().world_size,
            reshard_after_forward=config.fsdp_reshard_after_forward,
            cpu_offload=config.fsdp_cpu_offload,
            param_dtype=bf16,
        )
        return None
    adapter.model.to(device)
    if bf16 is not None:
        store_frozen_linears(adapter.model, bf16)
    if strategy == DDP:
        adapter.train_module = distributed.wrap_ddp(adapter.model, device)
    if config.compile:
        adapter.train_module = compile_for_training(adapter.train_module, device)
    return bf16


def store_frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Keep the frozen weights of linear layers (a LoRA run's base) in the autocast dtype:
    autocast casts them to it at every use anyway (it caches casts of trainable leaves only),
    so the matmuls see the same values, bit for bit, while the model keeps half the bytes and
    no step re-casts them. Weights shared with another kind of layer (a head tied to the
    embedding, which is looked up in fp32) stay as they are. Returns the parameters stored."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    elsewhere = {
        id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)
    }
    stored = 0
    for module in linears:
        for param in module.parameters(recurse=False):
            if not param.requires_grad and id(param) not in elsewhere and param.dtype != dtype:
                param.data = param.data.to(dtype)
                stored += param.numel()
    return stored


def why_not_bit_exact(saved: dict | None, strategy: str, world_size: int, dropout: float) -> str | None:
    """Why a resume from a checkpoint saved as ``saved`` (its ``parallel`` record: strategy and
    world_size) cannot continue bit for bit here; None when it can, or when the checkpoint
    predates the record and nothing is known.

    The same strategy on as many ranks continues bit for bit (each rank gets its own RNG
    stream back). Another number of ranks, or another strategy, adds up the gradients in
    another order: the same numbers to float rounding. With dropout on another number of
    ranks, the ranks' dropout streams cannot be matched one to one either."""
    if saved is None:
        return None
    before = (saved.get("strategy", SINGLE), int(saved.get("world_size", 1)))
    if before == (strategy, world_size):
        return None
    change = f"saved by {_describe(*before)}, resumed on {_describe(strategy, world_size)}"
    if world_size != before[1] and dropout > 0:
        return (
            f"this resume cannot be bit-exact ({change}): with dropout={dropout} every rank draws its own "
            "random stream, and the streams of one number of ranks cannot be matched on another"
        )
    return f"this resume cannot be bit-exact ({change}): the same numbers to float rounding"


def _describe(strategy: str, world_size: int) -> str:
    return "1 process" if strategy == SINGLE else f"{strategy.upper()} on {world_size} ranks"
