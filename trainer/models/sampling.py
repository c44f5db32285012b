"""Choosing the next token from a model's logits: temperature, top-k and top-p (nucleus).

The custom Transformer samples with ``pick_next_token``; Hugging Face models get the same
settings through transformers' GenerationConfig (hf_adapter.py), where they mean the same:
top-k keeps the k most likely tokens, top-p the smallest set of most likely tokens whose
probability adds up to at least p, and temperature 0 is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # None: every token may be drawn
    top_p: float | None = None  # None (or 1.0): no nucleus cut


def pick_next_token(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator) -> torch.Tensor:
    """The next token id, shape (1, 1), for the logits of one position, shape (1, vocab).

    Draws on the CPU with the CPU ``generator``: the same ids on every device. With neither
    top-k nor top-p, this is exactly softmax(logits / temperature) and one multinomial draw.
    """
    logits = logits.float()
    if settings.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / settings.temperature
    if settings.top_k:
        kth_largest = torch.topk(logits, min(settings.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if settings.top_p is not None and settings.top_p < 1.0:
        probs = _nucleus(probs, settings.top_p)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest most-likely set whose probability reaches top_p
    (the most likely token always stays); multinomial needs no renormalising."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)
