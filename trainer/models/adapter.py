"""Model adapters: what the Trainer needs from a model, whatever its architecture.

The Trainer never touches a model directly. An adapter owns the loss convention, generation,
which parameters train, and how the model and its tokenizer are saved and loaded:

- ``CustomTransformerAdapter`` (custom_adapter.py): lmrunner's character-level Transformer,
  new from the config or loaded from a checkpoint or registry directory.
- ``HFCausalLMAdapter`` (hf_adapter.py): any Hugging Face causal LM that needs no remote code
  (Qwen, Llama, Mistral, GPT-2, ...), saved in the ``save_pretrained`` layout so transformers
  loads a checkpoint directly.

Both are fed the same batches: ``inputs`` and ``targets`` are windows of one token stream,
``targets`` already shifted by one position. ``load_adapter`` (loading.py) picks the adapter
for a saved model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.config.schema import TrainingConfig
from trainer.data.packing import IGNORE_INDEX

CUSTOM_ARCHITECTURE = "custom-transformer"


class ModelAdapter(Protocol):
    architecture_type: str
    model: nn.Module  # the model itself: saved, described, sampled from
    train_module: nn.Module  # what ``loss`` runs through: ``model``, or DistributedDataParallel around it
    tokenizer: Any  # CharTokenizer or HFTokenizer: encode, decode, vocab_size, identifier
    max_positions: int  # the longest window the model can take
    stop_ids: frozenset[int]  # tokens that end a generated text (none for a character vocabulary)

    def loss_sum(
        self, inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Summed next-token cross entropy over the targets that count (-100: left out);
        ``targets`` are already the next tokens; ``positions`` mark packed examples."""

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross entropy over the targets that count."""

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, seq, vocab) logits of ``model`` (not the training wrapper), for scoring text."""

    def generate(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float,
        generator: torch.Generator,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Prompt plus sampled continuation (1-D ids), drawing only from ``generator``; ends
        early after a token of ``stop_ids``. ``on_token`` sees each new id as it is drawn."""

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward instead of keeping them (less memory, more compute)."""

    def save(self, directory: Path, lineage: dict[str, Any], weights: bool = True) -> None:
        """Weights, tokenizer and architecture into ``directory``, loadable by ``load_adapter``;
        without the weights for an FSDP checkpoint, which holds them as shards."""

    def describe(self) -> dict[str, Any]:
        """The architecture, for run metadata."""

    def overridden_settings(self, config: Any) -> list[str]:
        """Architecture settings of ``config`` that this model's own architecture overrides."""


def settings_overridden(config: Any, own: dict[str, Any]) -> list[str]:
    """``key=value (the model has X)`` for each architecture setting that the config sets away
    from its default and the model's own value (``own``; None: no such setting) overrides.
    Defaults the user never touched are not news: a pretrained model always brings its own."""
    defaults = TrainingConfig()
    return [
        f"{key}={getattr(config, key)!r} (the model has {value!r})"
        for key, value in own.items()
        if value is not None and getattr(config, key) not in (value, getattr(defaults, key))
    ]


def token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy summed over the targets that count, in fp32 whatever the logits' dtype.
    Summed, not averaged: the Trainer divides by the targets of the whole global batch, so
    a batch of examples with more targets weighs more, as the field's mean over tokens does."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def count_targets(targets: torch.Tensor) -> torch.Tensor:
    return (targets != IGNORE_INDEX).sum().clamp(min=1)
