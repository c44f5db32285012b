"""A checkpoint's optimizer and RNG state files, loaded into a run only if they fit it.

The files are verified against the manifest first, but a manifest can be rewritten to match
altered files: so what they hold is checked here too, and anything that does not fit is one
CheckpointError naming the file (exit 2), never a traceback or a crash in a fused kernel.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from trainer.checkpoint.tensors import load_tensors
from trainer.errors import CheckpointError, first_line
from trainer.training.distributed import Ranks
from trainer.training.rng_state import restore_rng_state

OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng_state.pt"


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: Path) -> None:
    with blamed_on(path, OPTIMIZER_FILE):
        optimizer.load_state_dict(load_tensors(path / OPTIMIZER_FILE))
        check_state_shapes(optimizer)


def load_rng_state(path: Path, ranks: Ranks) -> None:
    with blamed_on(path, RNG_FILE):
        rng = load_tensors(path / RNG_FILE)
        per_rank = rng.get("per_rank", [rng])
        # On another number of ranks the saved streams cannot be matched one to one: each
        # rank takes rank 0's. Exact either way with dropout 0, the DDP-equivalence setting.
        same_world = len(per_rank) == ranks.world_size
        restore_rng_state(per_rank[ranks.rank] if same_world else per_rank[0])


def check_state_shapes(optimizer: torch.optim.Optimizer) -> None:
    """load_state_dict does not compare shapes, and AdamW's fused kernel does not either: a
    moment of the wrong shape would crash the process at the first step."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(f"its {key} has shape {tuple(value.shape)}, its parameter {tuple(param.shape)}")


@contextlib.contextmanager
def blamed_on(path: Path, name: str):
    """What goes wrong while loading ``name`` into the run is that file's fault: one line."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise CheckpointError(
            f"{name} does not fit this run ({first_line(err)})",
            str(path),
            hint="it was altered after it was saved, or belongs to another model: resume from another checkpoint",
        ) from err
