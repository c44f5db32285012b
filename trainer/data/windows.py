"""Token windows for training and validation: tokenize the corpus, split it, cut windows.

Memory stays O(corpus): the corpus is one int64 tensor and every training window is a view
into it. Validation reads a fixed set of windows spread over its split, so val_loss compares
across steps and evaluating draws no random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from trainer.data.corpus import Corpus
from trainer.data.sampler import private_generator
from trainer.errors import DataError


def split_corpus(tokens: torch.Tensor, train_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
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
    """Every window of ``seq_len`` tokens: item i is (tokens[i:i+L], tokens[i+1:i+L+1]), as views."""

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        if len(tokens) < seq_len + 1:
            raise ValueError(f"{len(tokens)} tokens cannot hold a window of {seq_len} + 1")
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.tokens) - self.seq_len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.tokens[index : index + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


def eval_loader(dataset: WindowDataset, batch_size: int, num_batches: int) -> DataLoader:
    """A fixed set of windows spread evenly over the validation split.

    The same windows at every evaluation, so val_loss is comparable across steps, and no
    RNG is drawn, so evaluating never changes what training does next.
    """
    count = min(num_batches * batch_size, len(dataset))
    starts = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    batches = [starts[i : i + batch_size] for i in range(0, count, batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, generator=private_generator())


@dataclass(frozen=True)
class TrainingData:
    train: WindowDataset
    val: WindowDataset


def prepare_data(corpus: Corpus, tokenizer, seq_len: int, train_ratio: float) -> TrainingData:
    """Tokenize the corpus, split it and make the two window datasets."""
    try:
        tokens = tokenizer.encode(corpus.text)
    except KeyError as err:
        raise DataError(
            f"has {err.args[0]}",
            path=corpus.source,
            hint="use text made of characters the model's vocabulary has (the text it was trained on), "
            "or train a new model",
        ) from err
    train, val = split_corpus(tokens, train_ratio)
    check_window_fits(len(train), len(val), seq_len, corpus.source)
    return TrainingData(WindowDataset(train, seq_len), WindowDataset(val, seq_len))
