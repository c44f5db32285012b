"""Text to score a model on (evaluate --data): every target token once, in non-overlapping windows.

``ScoringTokens`` pairs each input token with the token the model should predict after it.
A target of ``IGNORE_INDEX`` is not scored (PyTorch's and transformers' convention), so the
loss and the token count leave it out. Plain text scores every token after the first
(``plain_text_tokens``). This is the seam for the other data formats: a chat or
prompt/completion file is to produce the same pair, with IGNORE_INDEX on the tokens that are
not to be scored (the prompts'), and evaluation is otherwise unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trainer.data.corpus import Corpus
from trainer.errors import DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ScoringTokens:
    inputs: torch.Tensor  # 1-D token ids
    targets: torch.Tensor  # 1-D, as long: the next token of each input, or IGNORE_INDEX
    source: str
    sha256: str

    @property
    def scored(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def plain_text_tokens(corpus: Corpus, tokenizer) -> ScoringTokens:
    """Every token of the text after the first, predicted from the ones before it."""
    try:
        tokens = tokenizer.encode(corpus.text)
    except KeyError as err:  # a character vocabulary lacks some of the text's characters
        raise DataError(
            f"has {err.args[0]}",
            path=corpus.source,
            hint="evaluate a character model on text made of the characters it was trained on",
        ) from err
    if len(tokens) < 2:
        raise DataError("too short: one token, nothing to predict", path=corpus.source, hint="give a longer text")
    return ScoringTokens(tokens[:-1], tokens[1:], corpus.source, corpus.sha256)


def window_count(tokens: ScoringTokens, seq_len: int) -> int:
    return -(-len(tokens.inputs) // seq_len)


def scoring_batches(
    tokens: ScoringTokens, seq_len: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) batches of the non-overlapping windows of ``seq_len`` that cover every
    target once, in order. The last window may be shorter: it comes alone, as a batch of one,
    so that nothing is padded. Always the same batches: the figures are deterministic."""
    full = len(tokens.inputs) // seq_len
    end = full * seq_len
    inputs, targets = tokens.inputs[:end].view(full, seq_len), tokens.targets[:end].view(full, seq_len)
    for start in range(0, full, batch_size):
        yield inputs[start : start + batch_size], targets[start : start + batch_size]
    if end < len(tokens.inputs):
        yield tokens.inputs[end:].view(1, -1), tokens.targets[end:].view(1, -1)
