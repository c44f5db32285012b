"""Text in, batches out: load_corpus, split_corpus, WindowDataset and a resumable sampler.

Memory stays O(corpus): the corpus is one int64 tensor and every training window is a view
into it. The training order is a pure function of (seed, batch number), so a resumed run
picks up mid-epoch exactly where the interrupted one stopped, without replaying data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from trainer.data.builtin_corpus import BUILTIN_CORPUS_LABEL, builtin_corpus
from trainer.errors import DataError


@dataclass(frozen=True)
class Corpus:
    text: str
    source: str  # the file path, or the built-in corpus label
    sha256: str


def load_corpus(data_path: str | None) -> Corpus:
    """The text at ``data_path``, or the built-in corpus when it is None."""
    if data_path is None:
        text = builtin_corpus()
        source = BUILTIN_CORPUS_LABEL
    else:
        text = _read_text_file(data_path)
        source = data_path
    return Corpus(text, source, hashlib.sha256(text.encode("utf-8")).hexdigest())


def check_data_file(data_path: str | None) -> None:
    """The cheap checks, so a run with a wrong path fails before it makes a run directory."""
    if data_path is None:
        return
    path = Path(data_path)
    if not path.exists():
        raise DataError("data file not found", path=data_path, hint="check the path given to --data or data_path")
    if not path.is_file():
        raise DataError("is not a regular file", path=data_path, hint="point --data at a UTF-8 text file")


def _read_text_file(data_path: str) -> str:
    check_data_file(data_path)
    path = Path(data_path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path=data_path) from err
    if not raw.strip():
        raise DataError("data file is empty", path=data_path, hint="give a file with training text in it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"is not UTF-8 text (invalid byte at offset {err.start})",
            path=data_path,
            hint="convert it, e.g. iconv -f latin1 -t utf-8 IN > OUT",
        ) from err


def split_corpus(tokens: torch.Tensor, train_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``train_ratio`` of the tokens for training, the rest for validation (views)."""
    split = int(len(tokens) * train_ratio)
    return tokens[:split], tokens[split:]


def check_window_fits(train: torch.Tensor, val: torch.Tensor, seq_len: int, source: str) -> None:
    """Both splits must hold at least one window of seq_len inputs plus the shifted target."""
    need = seq_len + 1
    for name, part in (("training", train), ("validation", val)):
        if len(part) < need:
            raise DataError(
                f"too short: the {name} split has {len(part)} tokens, fewer than one window "
                f"of max_seq_len + 1 = {need}",
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


class ResumableBatchSampler:
    """An endless stream of batches drawn from per-epoch shuffles of all window indices.

    The index stream is epoch 0's permutation, then epoch 1's, and so on, each seeded by
    (seed, epoch); batch k is stream[k * batch_size : (k + 1) * batch_size]. So any batch
    can be produced from its number alone, and ``start_batch`` resumes mid-epoch.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {world_size} ranks")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        # Under DDP each rank takes its own contiguous slice of every global batch, so the
        # global batch, and what one step learns from, does not depend on the number of ranks.
        share = batch_size // world_size
        self._slice = slice(rank * share, (rank + 1) * share)
        self._cached_epoch = -1
        self._cached_perm = torch.empty(0, dtype=torch.int64)

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        while True:
            yield self.batch_indices(batch)[self._slice]
            batch += 1

    def batch_indices(self, batch: int) -> list[int]:
        position, remaining = batch * self.batch_size, self.batch_size
        pieces = []
        while remaining:
            epoch, offset = divmod(position, self.num_items)
            take = min(remaining, self.num_items - offset)
            pieces.append(self._permutation(epoch)[offset : offset + take])
            position += take
            remaining -= take
        return torch.cat(pieces).tolist()

    def epoch_of(self, batch: int) -> int:
        return batch * self.batch_size // self.num_items

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._cached_epoch:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            self._cached_perm = torch.randperm(self.num_items, generator=generator)
            self._cached_epoch = epoch
        return self._cached_perm


def train_loader(dataset: WindowDataset, sampler: ResumableBatchSampler) -> DataLoader:
    # num_workers=0: batches are views plus one stack, far cheaper than a worker process.
    return DataLoader(dataset, batch_sampler=sampler, num_workers=0, generator=_private_generator())


def _private_generator() -> torch.Generator:
    """Starting a DataLoader iterator draws a seed from its generator; without one of its
    own it would draw from the global RNG that dropout uses, and a resumed run would be a
    draw out of step with the uninterrupted one."""
    return torch.Generator().manual_seed(0)


def eval_loader(dataset: WindowDataset, batch_size: int, num_batches: int) -> DataLoader:
    """A fixed set of windows spread evenly over the validation split.

    The same windows at every evaluation, so val_loss is comparable across steps, and no
    RNG is drawn, so evaluating never changes what training does next.
    """
    count = min(num_batches * batch_size, len(dataset))
    starts = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    batches = [starts[i : i + batch_size] for i in range(0, count, batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, generator=_private_generator())


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
    check_window_fits(train, val, seq_len, corpus.source)
    return TrainingData(WindowDataset(train, seq_len), WindowDataset(val, seq_len))
