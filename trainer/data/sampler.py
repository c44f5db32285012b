"""The training order: a resumable batch sampler whose batch k is a pure function of (seed, k).

A resumed run picks up mid-epoch exactly where the interrupted one stopped, without replaying
data, and under DDP every rank slices the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class ResumableBatchSampler:
    """An endless stream of batches drawn from per-epoch shuffles of all window indices.

    The index stream is epoch 0's permutation, then epoch 1's, and so on, each seeded by
    (seed, epoch); batch k is stream[k * batch_size : (k + 1) * batch_size]. So any batch
    can be produced from its number alone, and ``start_batch`` resumes mid-epoch. (For more
    than MATERIALIZED_LIMIT items the permutation is computed position by position.)
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
            pieces.append(self._shuffled(epoch, offset, take))
            position += take
            remaining -= take
        return [int(i) for piece in pieces for i in piece]

    def _shuffled(self, epoch: int, offset: int, count: int):
        """Positions offset .. offset + count of epoch ``epoch``'s permutation."""
        key = (self.seed * 1_000_003 + epoch) % 2**63
        if self.num_items > MATERIALIZED_LIMIT:  # a windowed corpus of billions of tokens
            return feistel_permutation(np.arange(offset, offset + count, dtype=np.uint64), self.num_items, key)
        if epoch != self._cached_epoch:
            generator = torch.Generator().manual_seed(key)
            self._cached_perm = torch.randperm(self.num_items, generator=generator)
            self._cached_epoch = epoch
        return self._cached_perm[offset : offset + count].tolist()


# Up to this many items an epoch's permutation is drawn whole (torch.randperm: 8 bytes an
# item, 32 MB here); beyond it, each position is computed on its own, so a stream of a
# billion windows costs no memory for its order.
MATERIALIZED_LIMIT = 1 << 22
_MASK64 = (1 << 64) - 1


def feistel_permutation(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """The image of ``positions`` under a keyed permutation of range(n), computed position
    by position: a 4-round Feistel network on the next even power of two, walking the cycle
    until the value falls inside range(n) (fewer than 4 steps on average). A pure function
    of (position, n, key), like the permutation drawn whole."""
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    low = np.uint64((1 << half) - 1)
    rounds = [np.uint64(_splitmix64(key + i) & int(low)) for i in range(1, 5)]
    values = positions.astype(np.uint64)
    pending = np.ones(len(values), dtype=bool)
    while pending.any():
        x = values[pending]
        left, right = x >> np.uint64(half), x & low
        for round_key in rounds:
            left, right = right, left ^ (_mix(right ^ round_key) & low)
        values[pending] = (left << np.uint64(half)) | right
        pending = values >= np.uint64(n)
    return values


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit integer hash (splitmix64's finaliser), vectorised; wraps as uint64 does."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _splitmix64(seed: int) -> int:
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def train_loader(dataset: Dataset, sampler: ResumableBatchSampler) -> DataLoader:
    # num_workers=0: batches are a few slices of a memory map and one stack, far cheaper
    # than a worker process. A dataset of rows of different lengths brings its own collate.
    collate = getattr(dataset, "collate", None)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=0, generator=private_generator(), collate_fn=collate)


def private_generator() -> torch.Generator:
    """Starting a DataLoader iterator draws a seed from its generator; without one of its
    own it would draw from the global RNG that dropout uses, and a resumed run would be a
    draw out of step with the uninterrupted one."""
    return torch.Generator().manual_seed(0)
