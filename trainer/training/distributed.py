"""torch.distributed under torchrun or submitit: who this process is, and the few collectives
the Trainer needs.

torchrun (and ``srun`` through submitit) start one process per rank with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment; ``init_from_env`` joins the group
(gloo for CPU tensors, NCCL for CUDA ones). Without those variables everything here is a
no-op for a single process, so the rest of the code never asks whether it is distributed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Ranks:
    if "torch.distributed" not in sys.modules:  # never joined a group: no need to import torch
        return Ranks()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def init_from_env() -> Ranks:
    """Join the process group the launcher describes; a plain ``python main.py`` is rank 0 of 1.

    Inside a submitit job with several tasks, submitit's own helper exports the variables
    torch expects first (its job environment knows the nodes and ranks SLURM gave).
    """
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1 and _in_submitit():
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        # One group for both kinds of tensors: gloo carries CPU ones, NCCL CUDA ones.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return current()


def _in_submitit() -> bool:
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def device_for(setting: str, ranks: Ranks) -> str:
    """Each rank on its own GPU: 'auto' or 'cuda' becomes cuda:<local rank> under DDP."""
    if ranks.distributed and setting in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{ranks.local_rank}"
    return setting


def on_main(make: Callable[[], T]) -> T:
    """``make()`` on rank 0 only, its result given to every rank (e.g. the run directory)."""
    ranks = current()
    if not ranks.distributed:
        return make()
    import torch.distributed as dist

    box: list[Any] = [None]
    if ranks.is_main:
        try:
            box = [("ok", make())]
        except BaseException as err:
            # Tell the other ranks before raising, or they would wait in a collective forever.
            dist.broadcast_object_list([("error", f"{type(err).__name__}: {err}")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    outcome, value = box[0]
    if outcome == "error":
        raise RankZeroFailed(f"rank 0 stopped: {value}")
    return value


class RankZeroFailed(RuntimeError):
    """Raised on the other ranks when what rank 0 alone does failed (rank 0 reports why)."""


def gather_to_main(value: Any) -> list[Any] | None:
    """Every rank's ``value``, in rank order, on rank 0 (None elsewhere)."""
    ranks = current()
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * ranks.world_size if ranks.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def shutdown() -> None:
    """Leave the group together: a rank that tears its connections down while a peer is still
    using them makes gloo abort that peer ("terminate called without an active exception").
    The barrier is bounded, so a rank whose peer died still exits."""
    from datetime import timedelta

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    # A peer that is gone (or a backend without a monitored barrier) raises: leave anyway.
    with contextlib.suppress(Exception):
        dist.monitored_barrier(timeout=timedelta(seconds=60))
    dist.destroy_process_group()


def wrap_ddp(model, device):
    """``model`` under DistributedDataParallel, which averages gradients over the ranks during
    backward and, at construction, gives every rank rank 0's weights. The models' buffers (a
    Hugging Face model's rotary frequencies) are constants: not re-broadcast at every forward."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **_no_buffer_sync()
    )


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for not re-broadcasting buffers at every forward (newer torch renamed it)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}
