"""Data to score a model on (evaluate --data): every target token once, in non-overlapping windows.

``ScoringTokens`` pairs each input token with the token the model should predict after it.
A target of ``IGNORE_INDEX`` is not scored (PyTorch's and transformers' convention), so the
loss and the token count leave it out. The data is read as training reads it (every format
of trainer/data, through the token cache): a text is one sequence whose every token after
the first is scored; completion and chat examples are sequences of their own whose prompt,
system and user tokens are not scored, only the responses and their EOS, exactly as the
loss counted them in training. A window never spans two examples, so no example is scored
with another's text as its context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trainer.config.schema import TrainingConfig
from trainer.data.packing import IGNORE_INDEX
from trainer.data.prepare import open_data, tokenize_source
from trainer.errors import DataError


@dataclass(frozen=True)
class ScoringTokens:
    inputs: torch.Tensor  # 1-D token ids, the sequences one after the other
    targets: torch.Tensor  # 1-D, as long: the next token of each input, or IGNORE_INDEX
    source: str
    sha256: str
    starts: tuple[int, ...] = (0,)  # where each sequence (an example) begins in inputs

    @property
    def scored(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def text_tokens(text: str, tokenizer, source: str, sha256: str) -> ScoringTokens:
    """Every token of a text after the first, predicted from the ones before it."""
    try:
        tokens = tokenizer.encode(text)
    except KeyError as err:  # a character vocabulary lacks some of the text's characters
        raise DataError(
            f"has {err.args[0]}",
            path=source,
            hint="evaluate a character model on text made of the characters it was trained on",
        ) from err
    if len(tokens) < 2:
        raise DataError("too short: one token, nothing to predict", path=source, hint="give a longer text")
    return ScoringTokens(tokens[:-1], tokens[1:], source, sha256)


def held_out_tokens(data_path: str, tokenizer, settings: dict) -> ScoringTokens:
    """``data_path`` in any format training reads, with the data settings of ``settings`` (the
    run's config: data_format, data_columns, chat_template); only responses are scored."""
    known = {key: settings[key] for key in ("data_format", "data_columns", "chat_template") if settings.get(key)}
    config = TrainingConfig(data_path=data_path, train_on_prompt=False, **known)
    spec = open_data(config)
    data, choice = tokenize_source(config, spec, tokenizer)
    if choice.format == "text":
        tokens = torch.from_numpy(np.asarray(data.tokens, dtype=np.int64))
        if len(tokens) < 2:
            raise DataError("too short: one token, nothing to predict", path=spec.label, hint="give a longer text")
        return ScoringTokens(tokens[:-1], tokens[1:], spec.label, spec.sha256)
    inputs, targets, starts, at = [], [], [], 0
    for index in range(data.num_examples):
        ids, mask = data.example(index)
        if len(ids) < 2:
            continue
        ids = np.asarray(ids, dtype=np.int64)
        scored = np.where(np.asarray(mask[1:]) == 1, ids[1:], IGNORE_INDEX)
        inputs.append(ids[:-1])
        targets.append(scored)
        starts.append(at)
        at += len(ids) - 1
    if not inputs:
        raise DataError("has no example to score", path=spec.label, hint="give examples with a response")
    joined = (torch.from_numpy(np.concatenate(parts)) for parts in (inputs, targets))
    return ScoringTokens(*joined, spec.label, spec.sha256, tuple(starts))


def _windows(tokens: ScoringTokens, seq_len: int) -> list[tuple[int, int]]:
    """(start, end) of each window: sequence by sequence, seq_len tokens at a time."""
    ends = [*tokens.starts[1:], len(tokens.inputs)]
    return [
        (at, min(at + seq_len, end))
        for start, end in zip(tokens.starts, ends, strict=True)
        for at in range(start, end, seq_len)
    ]


def window_count(tokens: ScoringTokens, seq_len: int) -> int:
    return len(_windows(tokens, seq_len))


def scoring_batches(
    tokens: ScoringTokens, seq_len: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) batches of the non-overlapping windows that cover every target once,
    in order. Windows of one length share a batch (up to ``batch_size``); a window of
    another length (a sequence's last) starts a new one, so nothing is padded. Always the
    same batches: the figures are deterministic."""
    batch: list[tuple[int, int]] = []
    for window in _windows(tokens, seq_len):
        if batch and (len(batch) == batch_size or window[1] - window[0] != batch[0][1] - batch[0][0]):
            yield _stacked(tokens, batch)
            batch = []
        batch.append(window)
    if batch:
        yield _stacked(tokens, batch)


def _stacked(tokens: ScoringTokens, windows: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.stack([tokens.inputs[start:end] for start, end in windows]),
        torch.stack([tokens.targets[start:end] for start, end in windows]),
    )
