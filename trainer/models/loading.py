"""Loading a saved model (a registry model or a checkpoint) behind the adapter of its architecture."""

from __future__ import annotations

from pathlib import Path

from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.hf_adapter import HFCausalLMAdapter


def load_adapter(directory: Path, architecture_type: str, dropout: float, tokenizer=None) -> ModelAdapter:
    """The model saved in ``directory`` (a registry model or a checkpoint) behind its adapter."""
    if architecture_type == CUSTOM_ARCHITECTURE:
        adapter = CustomTransformerAdapter.load(directory, dropout)
        if tokenizer is not None:
            adapter.tokenizer = tokenizer
        return adapter
    return HFCausalLMAdapter.load(directory, architecture_type, tokenizer)
