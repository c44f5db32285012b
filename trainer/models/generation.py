"""Generating text from any model, as the generate and chat commands do it.

The prompt is checked and encoded (a character model names the characters it lacks), the
number of new tokens is capped by the model's positions, the text is handed out as it is
produced, and the figures the commands report (token counts, tokens/s) are measured. The
same seed gives the same text: every draw comes from a generator seeded with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer.data.char_tokenizer import CharTokenizer
from trainer.errors import UsageError
from trainer.models.adapter import ModelAdapter
from trainer.models.sampling import SamplingSettings


@dataclass(frozen=True)
class Generated:
    text: str  # the new text only, without a stop token
    new_tokens: int  # counting a stop token
    seconds: float
    stopped_at_eos: bool

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def encode_prompt(tokenizer, text: str, what: str = "the prompt") -> torch.Tensor:
    """Token ids of ``text``; an empty text starts from the tokenizer's start token."""
    if isinstance(tokenizer, CharTokenizer):
        missing = tokenizer.unknown_chars(text)
        if missing:
            raise UsageError(
                f"{what} has characters the model's vocabulary lacks: {''.join(missing)!r}",
                hint="use characters that occur in the text the model was trained on",
            )
    ids = tokenizer.encode(text)
    return ids if len(ids) else torch.tensor([tokenizer.start_id], dtype=torch.int64)


def new_token_budget(
    max_positions: int, prompt_tokens: int, requested: int, what: str = "the prompt", hint: str = "shorten the prompt"
) -> int:
    """How many new tokens fit after the prompt (at most ``requested``)."""
    room = max_positions - prompt_tokens
    if room < 1:
        raise UsageError(
            f"{what} takes {prompt_tokens} tokens and the model has {max_positions} positions: no room left to generate",
            hint=hint,
        )
    return min(requested, room)


class TextStream:
    """New token ids in, new text out, as they come. A byte-level tokenizer may split one
    character over several tokens; text that ends in half a character is held back until
    the rest arrives, so what is handed out is never a replacement character that the next
    token would have completed."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.handed_out = ""

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self._hand_out(text)

    def finish(self) -> None:
        self._hand_out(self.tokenizer.decode(self.ids))

    def _hand_out(self, text: str) -> None:
        new = text[len(self.handed_out) :]
        if new:
            self.handed_out = text
            self.on_text(new)


def generate_text(
    adapter: ModelAdapter,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    settings: SamplingSettings,
    seed: int,
    on_text: Callable[[str], None] | None = None,
) -> Generated:
    """Sample up to ``max_new_tokens`` after ``prompt_ids``, stopping at a stop token."""
    device = next(adapter.model.parameters()).device
    stop_ids = adapter.stop_ids
    stream = TextStream(adapter.tokenizer, on_text) if on_text is not None else None

    def on_token(token: int) -> None:
        if stream is not None and token not in stop_ids:
            stream.add(token)

    started = time.perf_counter()
    out = adapter.generate(
        prompt_ids.to(device),
        max_new_tokens,
        settings.temperature,
        torch.Generator().manual_seed(seed),
        top_k=settings.top_k,
        top_p=settings.top_p,
        on_token=on_token,
    )
    seconds = time.perf_counter() - started
    if stream is not None:
        stream.finish()
    new = out[len(prompt_ids) :].tolist()
    stopped = bool(new) and new[-1] in stop_ids
    text = adapter.tokenizer.decode(new[:-1] if stopped else new)
    return Generated(text, len(new), seconds, stopped)


def sample_text(
    adapter: ModelAdapter,
    prompt: str,
    max_new_tokens: int = 200,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
) -> str:
    """The prompt and what the model writes after it, as ``generate`` prints it: the same seed,
    the same text (``max_new_tokens`` capped by the model's positions)."""
    ids = encode_prompt(adapter.tokenizer, prompt)
    budget = new_token_budget(adapter.max_positions, len(ids), max_new_tokens)
    return prompt + generate_text(adapter, ids, budget, SamplingSettings(temperature, top_k, top_p), seed).text
