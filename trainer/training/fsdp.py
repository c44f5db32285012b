"""FSDP2: a model's weights, gradients and optimizer state sharded over the ranks.

``fully_shard`` is applied to each decoder block and then to the whole model. Each block's
parameters become DTensors holding 1/N of every tensor on each of N ranks; a block's forward
gathers its whole weights first and frees them after (``reshard_after_forward``), and its
backward reduce-scatters the gradients, so each rank keeps only its shard of them and AdamW
keeps only its shard of the moments. What the blocks leave (embeddings, the final norm, the
head) is sharded with the root, which keeps a weight-tied head and embedding one parameter.

Gradients are averaged over the ranks, as under DDP (FSDP2's reduce-scatter divides by the
number of ranks), so the Trainer's loss scaling is the same for both.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules to shard one by one: those whose class a model names in
    ``_no_split_modules``, the Hugging Face convention for "never split this layer across
    devices" (Qwen2DecoderLayer, LlamaDecoderLayer, ...; the custom Transformer's Block).
    Every module that names some counts, so a model wrapped in another (a PEFT model)
    still finds its base model's layers."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


def shard_model(
    model: nn.Module,
    device: torch.device,
    world_size: int,
    *,
    reshard_after_forward: bool,
    cpu_offload: bool,
    param_dtype: torch.dtype | None,
) -> int:
    """Shard ``model`` in place over the ``world_size`` ranks of the default group, onto
    ``device`` block by block (a model larger than the device never sits on it whole);
    return how many blocks were sharded on their own.

    ``param_dtype`` (bf16): each block computes in it and its gradients are reduced in fp32,
    while the shards (the optimizer's master weights) stay fp32: FSDP's mixed precision,
    which takes the place of autocast. ``cpu_offload``: the shards, their gradients and the
    optimizer step stay on the CPU; only the block at work is on the GPU.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    options = {
        "mesh": init_device_mesh(device.type, (world_size,)),
        "reshard_after_forward": reshard_after_forward,
        "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if param_dtype is not None
        else MixedPrecisionPolicy(),
        "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    }
    blocks = decoder_blocks(model)
    for block in blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)
    return len(blocks)
