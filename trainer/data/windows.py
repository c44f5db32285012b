"""Windows of a token stream (text data), the split of a stream, and the validation loader.

A stream is the memory-mapped tokens of text data (trainer/data/token_cache.py): every
window of max_seq_len + 1 tokens is an item, read from the map when it is drawn, so memory
does not grow with the corpus. Validation reads a fixed set of items spread over its split,
so val_loss compares across steps and evaluating draws no random numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainer.data.sampler import private_generator
from trainer.errors import DataError


def split_stream(tokens, train_ratio: float):
    """The first ``train_ratio`` of the tokens for training, the rest for validation (views)."""
    split, _ = split_sizes(len(tokens), train_ratio)
    return tokens[:split], tokens[split:]


def split_sizes(num_tokens: int, train_ratio: float) -> tuple[int, int]:
    """How many tokens ``split_corpus`` gives the training and the validation split."""
    split = int(num_tokens * train_ratio)
    return split, num_tokens - split


def check_window_fits(train_tokens: int, val_tokens: int, seq_len: int, source: str) -> None:
    """Both splits must hold at least one window of seq_len inputs plus the shifted target."""
    need = seq_len + 1
    for name, size in (("training", train_tokens), ("validation", val_tokens)):
        if size < need:
            raise DataError(
                f"too short: the {name} split has {size} tokens, fewer than one window of max_seq_len + 1 = {need}",
                path=source,
                hint="use a longer text, a smaller max_seq_len, or a train_ratio that leaves both splits a window",
            )


class WindowDataset(Dataset):
    """Every window of ``seq_len`` tokens: item i is (tokens[i:i+L], tokens[i+1:i+L+1]).

    ``tokens`` is a tensor or a (memory-mapped) numpy array of any integer type; items are
    int64 tensors either way."""

    def __init__(self, tokens, seq_len: int):
        if len(tokens) < seq_len + 1:
            raise ValueError(f"{len(tokens)} tokens cannot hold a window of {seq_len} + 1")
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.tokens) - self.seq_len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.tokens[index : index + self.seq_len + 1]
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(chunk.astype(np.int64))
        return chunk[:-1], chunk[1:]


def eval_loader(dataset: Dataset, batch_size: int, num_batches: int) -> DataLoader:
    """A fixed set of items spread evenly over the validation split.

    The same items at every evaluation, so val_loss is comparable across steps, and no RNG
    is drawn, so evaluating never changes what training does next.
    """
    count = min(num_batches * batch_size, len(dataset))
    starts = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    batches = [starts[i : i + batch_size] for i in range(0, count, batch_size)]
    collate = getattr(dataset, "collate", None)
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, generator=private_generator(), collate_fn=collate)
