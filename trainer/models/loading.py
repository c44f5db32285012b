"""Loading a saved model (a registry model or a checkpoint) behind the adapter of its architecture."""

from __future__ import annotations

from pathlib import Path

from trainer.checkpoint.layout import MODEL_SHARDS, is_sharded
from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.hf_adapter import HFCausalLMAdapter


def load_adapter(directory: Path, architecture_type: str, dropout: float, tokenizer=None) -> ModelAdapter:
    """The model saved in ``directory`` (a registry model or a checkpoint) behind its adapter.
    An FSDP run's checkpoint holds its weights as shards: they are gathered whole here, in this
    process, so one process, DDP, generate, export and register see an ordinary model."""
    weights = consolidated_weights(directory) if is_sharded(directory) else None
    if architecture_type == CUSTOM_ARCHITECTURE:
        adapter = CustomTransformerAdapter.load(directory, dropout, weights)
        if tokenizer is not None:
            adapter.tokenizer = tokenizer
        return adapter
    return HFCausalLMAdapter.load(directory, architecture_type, tokenizer, weights)


def consolidated_weights(directory: Path) -> dict:
    """The whole state dict of a sharded checkpoint, read from every rank's shard file
    (torch.distributed.checkpoint's offline consolidation, without a process group)."""
    from trainer.checkpoint.shards import read_full

    return read_full(directory / MODEL_SHARDS)["model"]
