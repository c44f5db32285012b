"""Examples as training rows: packed into rows of max_seq_len positions, or one a row, padded.

An example of n tokens gives n - 1 positions: inputs ``ids[:-1]``, targets ``ids[1:]``, a
target the loss does not count (prompt, user text, padding) being -100, the field's
convention. No target ever crosses from one example into the next.

Packing (``packing: true``) fills each row with whole examples, best fit, longest first,
so little of a row is padding; ``positions`` restart at 0 for each example, and the models
turn them into attention that stays within an example (block-diagonal causal attention:
the custom Transformer and Hugging Face models with ``eager`` or ``sdpa`` attention, CPU
included, through a 4-D mask; ``flash_attention_2`` reads the restarting positions). Without
packing, each example is a row of its own, padded to the longest of its batch.

An example longer than max_seq_len + 1 tokens is cut to that length (``long_examples:
truncate``, keeping its beginning) or left out (``drop``); one left with no target to learn
(a prompt longer than the row) is left out either way. Both are counted and reported.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data.token_cache import TokenizedData

IGNORE_INDEX = -100  # a target the loss leaves out: the field's convention (PyTorch, transformers)


@dataclass(frozen=True)
class FittedExamples:
    ids: np.ndarray  # the examples kept, by index into the tokenized data
    lengths: np.ndarray  # tokens of each, after truncation
    truncated: int
    dropped: int


def fit_examples(data: TokenizedData, chosen: np.ndarray, seq_len: int, long_examples: str) -> FittedExamples:
    """The examples of ``chosen`` that fit a row of ``seq_len`` positions (cut or left out as
    ``long_examples`` says), each with at least one target left."""
    lengths = data.lengths()[chosen]
    too_long = lengths > seq_len + 1
    keep = lengths >= 2
    if long_examples == "drop":
        keep &= ~too_long
    clipped = np.minimum(lengths, seq_len + 1)
    if data.mask is not None:
        has_target = [k and _has_target(data, int(i), int(n)) for i, n, k in zip(chosen, clipped, keep, strict=True)]
        keep &= np.array(has_target, dtype=bool)
    dropped = int((~keep).sum())
    return FittedExamples(chosen[keep], clipped[keep], int((too_long & keep).sum()), dropped)


def _has_target(data: TokenizedData, index: int, length: int) -> bool:
    start = int(data.offsets[index])
    return bool(data.mask[start + 1 : start + length].any())


def example_pair(data: TokenizedData, index: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of one example cut to ``length`` tokens, as int64."""
    start = int(data.offsets[index])
    ids = np.asarray(data.tokens[start : start + length], dtype=np.int64)
    targets = ids[1:].copy()
    if data.mask is not None:
        targets[np.asarray(data.mask[start + 1 : start + length]) == 0] = IGNORE_INDEX
    return ids[:-1], targets


def pack_rows(lengths: np.ndarray, seq_len: int) -> list[list[int]]:
    """Rows of example positions (indices into ``lengths``), each holding at most ``seq_len``
    positions: best fit, longest first (ties in data order, so the packing is the same on
    every run). An example of n tokens takes n - 1 positions."""
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free positions, row), ascending: the best fit is a bisect away
    for i in order:
        need = int(lengths[i]) - 1
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = seq_len, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - need > 0:
            bisect.insort(free, (room - need, row))
    return rows


class PackedExamples(Dataset):
    """Rows of whole examples: (inputs, targets, positions), each ``seq_len`` long."""

    def __init__(self, data: TokenizedData, fitted: FittedExamples, seq_len: int, pad_id: int):
        self.data, self.fitted, self.seq_len, self.pad_id = data, fitted, seq_len, pad_id
        self.rows = pack_rows(fitted.lengths, seq_len)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        targets = np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(self.seq_len, dtype=np.int64)  # a pad is an example of its own
        at = 0
        for i in self.rows[row]:
            x, y = example_pair(self.data, int(self.fitted.ids[i]), int(self.fitted.lengths[i]))
            inputs[at : at + len(x)], targets[at : at + len(x)] = x, y
            positions[at : at + len(x)] = np.arange(len(x))
            at += len(x)
        return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(positions)

    def padding_fraction(self) -> float:
        used = int(self.fitted.lengths.sum()) - len(self.fitted.lengths)
        return 1.0 - used / max(1, len(self.rows) * self.seq_len)


class PaddedExamples(Dataset):
    """One example a row; ``collate`` pads a batch to its longest (targets with -100). Padding
    comes after the example, so causal attention never reaches it: no mask is needed."""

    def __init__(self, data: TokenizedData, fitted: FittedExamples, pad_id: int):
        self.data, self.fitted, self.pad_id = data, fitted, pad_id

    def __len__(self) -> int:
        return len(self.fitted.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = example_pair(self.data, int(self.fitted.ids[i]), int(self.fitted.lengths[i]))
        return torch.from_numpy(x), torch.from_numpy(y)

    def collate(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(x) for x, _ in items)
        inputs = torch.full((len(items), longest), self.pad_id, dtype=torch.int64)
        targets = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.int64)
        for row, (x, y) in enumerate(items):
            inputs[row, : len(x)], targets[row, : len(y)] = x, y
        return inputs, targets
