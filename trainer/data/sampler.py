"""The training order: a resumable batch sampler whose batch k is a pure function of (seed, k).

A resumed run picks up mid-epoch exactly where the interrupted one stopped, without replaying
data, and under DDP every rank slices the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


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

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._cached_epoch:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            self._cached_perm = torch.randperm(self.num_items, generator=generator)
            self._cached_epoch = epoch
        return self._cached_perm


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
