"""Will the run fit? A rough floor of the memory a training step needs, checked while planning.

A setting such as max_seq_len=1000000 or batch_size=10**9 would otherwise start allocating
until the kernel kills the process (or overflow inside torch). The estimate counts what
training cannot do without, in fp32 with AdamW: weights, gradients and two moments (16 bytes
a parameter), the activations kept for backward, and the logits. It is a floor, not a
forecast, so a run is refused only when even the floor exceeds the device's whole memory.
Under FSDP each rank keeps 1/N of the weights, gradients and moments, plus one decoder block
gathered whole while it runs: the model that only fits sharded is what FSDP is for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.config.schema import TrainingConfig
from trainer.errors import ConfigError

BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, AdamW's two moments
FLOAT_BYTES = 4


@dataclass(frozen=True)
class Architecture:
    vocab_size: int
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    max_positions: int
    num_parameters: int


def custom_architecture(config: TrainingConfig, vocab_size: int) -> Architecture:
    d, ff, layers = config.d_model, config.d_ff, config.n_layers
    per_layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d  # attention, MLP, two norms
    parameters = vocab_size * d + config.max_seq_len * d + layers * per_layer + 2 * d
    return Architecture(vocab_size, layers, d, config.n_heads, ff, config.max_seq_len, parameters)


def hf_architecture(directory: Path, num_parameters: int | None) -> Architecture | None:
    """From a Hugging Face model's config.json; None when it lacks the usual names."""
    try:
        c = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        d, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    heads = int(c.get("num_attention_heads") or 1)
    ff = int(c.get("intermediate_size") or 4 * d)
    positions = int(c.get("max_position_embeddings") or c.get("n_positions") or 2048)
    parameters = num_parameters or vocab * d + layers * (4 * d * d + 3 * d * ff)
    return Architecture(vocab, layers, d, heads, ff, positions, parameters)


def training_bytes(config: TrainingConfig, arch: Architecture, world_size: int, lora: bool = False) -> dict[str, int]:
    """The floor of one rank's memory for a training step, by part (Python ints: no overflow).
    ``lora``: the weights are frozen, adapters train."""
    seq = min(config.max_seq_len, arch.max_positions)
    micro_batch = max(1, config.batch_size // (world_size * config.grad_accum_steps))
    tokens = micro_batch * seq
    # Kept for backward, per token and layer: the block's inputs and its projections (about
    # 6 x d_model), the MLP's hidden layer (2 x d_ff) and one row of attention weights per head.
    per_token_layer = 6 * arch.d_model + 2 * arch.d_ff + arch.n_heads * seq
    if config.gradient_checkpointing:  # each block keeps its input; one block's rest at a time
        per_token_layer = arch.d_model + per_token_layer // arch.n_layers
    # LoRA trains adapters only: the frozen weights need no gradients and no optimizer moments.
    per_parameter = FLOAT_BYTES if lora else BYTES_PER_PARAMETER
    state = arch.num_parameters * per_parameter
    if config.strategy == "fsdp" and world_size > 1:
        # A rank's shards, and the largest unit gathered whole: one block (a floor: the
        # prefetch of the next one and the embeddings are left out).
        block = arch.num_parameters // max(1, arch.n_layers)
        state = -(-state // world_size) + block * FLOAT_BYTES
    return {
        "weights, gradients and optimizer state": state,
        "activations": tokens * arch.n_layers * per_token_layer * FLOAT_BYTES,
        "logits": 2 * tokens * arch.vocab_size * FLOAT_BYTES,  # the logits and their gradient
    }


def check_fits(
    config: TrainingConfig, arch: Architecture, world_size: int, available: int | None, lora: bool = False
) -> None:
    """Refuse (exit 2) a run whose memory floor exceeds ``available`` bytes, naming the part
    that does not fit and the settings that size it."""
    if available is None:
        return
    parts = training_bytes(config, arch, world_size, lora)
    needed = sum(parts.values())
    if needed <= available:
        return
    largest = max(parts, key=parts.get)
    sized_by = {
        "weights, gradients and optimizer state": "n_layers, d_model, d_ff, max_seq_len (or a smaller model)"
        if config.model_name is None
        else "the model's size: a smaller model, LoRA (finetune=lora) whose frozen weights need no optimizer "
        "state, or strategy=fsdp over several ranks, each keeping 1/N of them",
        "activations": "batch_size (or more grad_accum_steps), max_seq_len, n_layers, or turn on gradient_checkpointing",
        "logits": "batch_size (or more grad_accum_steps), max_seq_len",
    }[largest]
    raise ConfigError(
        f"this run needs at least {_size(needed)} of memory ({largest}: {_size(parts[largest])}), "
        f"more than the {_size(available)} this machine has",
        key="batch_size" if largest != "weights, gradients and optimizer state" else "n_layers",
        hint=f"lower {sized_by}",
    )


def device_memory(device: str) -> int | None:
    """Total memory of the device a run will use; None where it cannot be read."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return None
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def _size(value: int) -> str:
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,} bytes"
