"""The checkpoint directory format, by name: what a checkpoint directory holds.

A checkpoint is ``checkpoints/step-<8 digits>/`` holding the weights (safetensors), the
tokenizer, ``optimizer.pt`` and ``rng_state.pt`` (tensors and plain containers only, loaded
with ``weights_only=True``), ``trainer_state.json`` and, written last, ``manifest.json``
with the sha256 of every other file. It is assembled in a hidden sibling directory, fsynced
and renamed into place, so a directory named step-* is complete or absent, and one whose
manifest does not verify is never loaded.

An FSDP run's checkpoint holds, instead of the weights and ``optimizer.pt``, the directories
``model_shards/`` and ``optimizer_shards/`` (torch.distributed.checkpoint: one file per rank
and an index; see shards.py), with the model's configuration and tokenizer beside them, and
``trainer_state.json`` records ``sharded``: by how many ranks.
"""

from __future__ import annotations

import re
from pathlib import Path

FORMAT_VERSION = 1  # a checkpoint of whole files
# A sharded checkpoint: versions of lmrunner before it cannot read one, and say "upgrade".
SHARDED_FORMAT_VERSION = 2
NEWEST_FORMAT_VERSION = SHARDED_FORMAT_VERSION
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
STEP_DIR_PATTERN = re.compile(r"^step-(\d{8})$")
MODEL_SHARDS = "model_shards"
OPTIMIZER_SHARDS = "optimizer_shards"


def is_sharded(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds its model as shards (an FSDP run's) rather than whole files."""
    return (checkpoint / MODEL_SHARDS).is_dir()


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def partial_dir_name(step: int, pid: int) -> str:
    """The hidden directory a checkpoint is assembled in; the writer's pid tells whether it is alive."""
    return hidden_dir_name("partial", step, pid)


def hidden_dir_name(kind: str, step: int, pid: int) -> str:
    """A hidden sibling of a step directory, in use by process ``pid``: ``partial`` (being
    written), ``stale`` (being replaced by the same step saved again), ``pruned`` (being deleted)."""
    return f".{kind}-{step_dir_name(step)}-{pid}"


# What a killed writer leaves behind; group 1 is the pid of the process that made it.
LEFTOVER_PATTERN = re.compile(r"^\.(?:partial|stale|pruned)-step-\d{8}-(\d+)$")
