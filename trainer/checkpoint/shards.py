"""Sharded state in a checkpoint: torch.distributed.checkpoint (DCP) directories, read safely.

An FSDP run's checkpoint keeps its model and optimizer state as DCP directories
(``model_shards/``, ``optimizer_shards/``): every rank writes its own file (``__<rank>_0.distcp``)
and the coordinator a ``.metadata`` index. They sit inside the checkpoint directory like any
other file, so the manifest covers them and the atomic write holds.

DCP reads its ``.metadata`` with plain ``pickle`` and the non-tensor values of a state dict
(the optimizer's hyperparameters) with ``torch.load(weights_only=False)``: either could run
code from a file someone altered (a manifest can be rewritten to match). Here both go through
allow-lists instead, so a sharded checkpoint, like every other, never runs code when loaded.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import load as dcp_load
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

from trainer.checkpoint.layout import MODEL_SHARDS, OPTIMIZER_SHARDS
from trainer.errors import CheckpointError

__all__ = [
    "MODEL_SHARDS",
    "OPTIMIZER_SHARDS",
    "ShardWriteError",
    "load_shards",
    "rank_files",
    "read_full",
    "save_shards",
]

_RANK_FILE = re.compile(r"^__(\d+)_\d+\.distcp$")


class ShardWriteError(RuntimeError):
    """A rank failed to write its shards (DCP reports every rank's failure on every rank);
    chained to the first failure, so the disk's own error (errno) can be found."""


def save_shards(state: dict[str, Any], directory: Path) -> None:
    """Write ``state`` (DTensors: each rank its own shard) to ``directory``. Collective: every
    rank calls it; DCP gathers the ranks' plans, each writes its file, the coordinator the index."""
    try:
        dcp_save(state, storage_writer=FileSystemWriter(str(directory), single_file_per_rank=True))
    except CheckpointException as err:  # a BaseException: no `except Exception` would see it
        rank, failure = _first_failure(err)
        raise ShardWriteError(f"rank {rank} could not write its shards: {_one_line(failure)}") from failure


def load_shards(state: dict[str, Any], directory: Path) -> None:
    """Fill ``state`` in place from ``directory``. Collective; each rank reads the parts of the
    saved shards that its own tensors cover, so a checkpoint of N ranks loads on M."""
    with _blamed_on(directory):
        _check_metadata(directory)
        dcp_load(state, storage_reader=_SafeReader(str(directory)), planner=_SafeLoadPlanner())


def read_full(directory: Path) -> dict[str, Any]:
    """The whole state saved in ``directory``, gathered from every rank's file into plain tensors
    in this process alone (no process group needed): what a single process, DDP or an export
    takes from a sharded checkpoint."""
    # DCP's public load fills the state dict it is given; with none to give (no model to shape
    # it), this is what torch's own dcp_to_torch_save does, without writing a file.
    state: dict[str, Any] = {}
    with _blamed_on(directory), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized": as intended
        _check_metadata(directory)
        _load_state_dict(state, storage_reader=_SafeReader(str(directory)), planner=_SafeEmptyPlanner(), no_dist=True)
    return state


def rank_files(directory: Path) -> dict[int, int]:
    """Bytes of each rank's shard file in ``directory``, by rank."""
    sizes = {}
    for path in directory.iterdir():
        match = _RANK_FILE.match(path.name)
        if match:
            sizes[int(match.group(1))] = path.stat().st_size
    return dict(sorted(sizes.items()))


# What a DCP .metadata file may name: its own record types, torch's sizes, dtypes and layouts,
# and the path it was saved to. Anything else is refused before it can be called.
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
}


class _Refused(Exception):
    """A .metadata file named something outside the allow-list."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if name in _METADATA_GLOBALS.get(module, ()) or dtype:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")


def _read_metadata(directory: Path):
    with open(directory / ".metadata", "rb") as handle:
        return _MetadataUnpickler(handle).load()


def _check_metadata(directory: Path) -> None:
    """Read the index once before DCP does: DCP catches a failed read, logs its traceback to
    the root logger and tries other files, so a refusal would reach the console as pages."""
    if not (directory / ".metadata").is_file():
        raise CheckpointError(f"{directory.name}/.metadata is missing", str(directory.parent))
    _read_metadata(directory)


class _SafeReader(FileSystemReader):
    def read_metadata(self, *args: Any, **kwargs: Any):
        metadata = _read_metadata(Path(self.path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafeBytes:
    """Non-tensor values (the optimizer's hyperparameters) read as tensors are: weights_only.
    The placement is DefaultLoadPlanner.load_bytes's own."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


class _SafeLoadPlanner(_SafeBytes, DefaultLoadPlanner):
    pass


class _SafeEmptyPlanner(_SafeBytes, _EmptyStateDictLoadPlanner):
    pass


@contextlib.contextmanager
def _blamed_on(directory: Path):
    """Whatever goes wrong reading shards is the checkpoint's fault: one CheckpointError naming
    the shard directory (DCP wraps each rank's error in a CheckpointException, a BaseException)."""
    try:
        yield
    except (Exception, CheckpointException) as err:
        if isinstance(err, CheckpointError):
            raise
        cause = _first_failure(err)[1] if isinstance(err, CheckpointException) else err
        refused = _refused_name(cause)
        why = (
            f"{directory.name}/.metadata asks to load {refused}, which a checkpoint never does; refused without running it"
            if refused
            else f"{directory.name} does not hold readable shards ({_one_line(cause)})"
        )
        raise CheckpointError(
            why, str(directory.parent), hint="it was altered after it was saved: resume from another checkpoint"
        ) from err


def _first_failure(err: CheckpointException) -> tuple[int, BaseException]:
    rank = min(err.failures)
    failure = err.failures[rank]
    return rank, failure[0] if isinstance(failure, tuple) else failure


def _refused_name(err: BaseException) -> str | None:
    link: BaseException | None = err
    while link is not None:
        if isinstance(link, _Refused):
            return str(link)
        link = link.__cause__ or link.__context__
    return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
