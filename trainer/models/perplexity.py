"""A model's loss on held-out text: mean loss, perplexity and, for the character model, bits
per character, over every scored token of the text (trainer/data/held_out.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.data.char_tokenizer import CharTokenizer
from trainer.data.held_out import IGNORE_INDEX, ScoringTokens, scoring_batches, window_count
from trainer.errors import DataError
from trainer.models.adapter import ModelAdapter


@dataclass(frozen=True)
class Perplexity:
    loss: float  # mean cross entropy, nats per scored token
    perplexity: float
    tokens: int  # scored
    windows: int
    bits_per_character: float | None  # the character model's: one token is one character

    def to_dict(self) -> dict:
        figures = {"loss": self.loss, "perplexity": self.perplexity, "tokens": self.tokens, "windows": self.windows}
        if self.bits_per_character is not None:
            figures["bits_per_character"] = self.bits_per_character
        return figures


@torch.no_grad()
def measure_perplexity(adapter: ModelAdapter, tokens: ScoringTokens, seq_len: int, batch_size: int) -> Perplexity:
    """Summed in float64 over fixed batches of eval-mode (dropout-free) forwards: the same
    figures on every run with the same settings."""
    device = next(adapter.model.parameters()).device
    total, scored = torch.zeros((), dtype=torch.float64), 0
    for inputs, targets in scoring_batches(tokens, seq_len, batch_size):
        logits = adapter.logits(inputs.to(device)).float()
        losses = F.cross_entropy(
            logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += losses.double().cpu()
        scored += int((targets != IGNORE_INDEX).sum())
    if scored == 0:
        raise DataError("has no token to score", path=tokens.source, hint="give text with targets that are not masked")
    loss = total.item() / scored
    bits = loss / math.log(2) if isinstance(adapter.tokenizer, CharTokenizer) else None
    return Perplexity(loss, math.exp(loss), scored, window_count(tokens, seq_len), bits)
