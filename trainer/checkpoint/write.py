"""The checkpoint directory format: atomic write, manifest, verify, find latest, prune.

A checkpoint is ``checkpoints/step-<8 digits>/`` holding the weights (safetensors), the
tokenizer, ``optimizer.pt`` and ``rng_state.pt`` (tensors and plain containers only, loaded
with ``weights_only=True``), ``trainer_state.json`` and, written last, ``manifest.json``
with the sha256 of every other file. It is assembled in a hidden sibling directory, fsynced
and renamed into place, so a directory named step-* is complete or absent, and one whose
manifest does not verify is never loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainer.errors import CheckpointError
from trainer.files import describe_files, fsync_dir, fsync_file, sha256_of

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")

# A writer fills the given directory with its files.
FileWriter = Callable[[Path], None]


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def write_checkpoint(checkpoints_dir: Path, step: int, writers: list[FileWriter], trainer_state: dict) -> Path:
    """Write a complete checkpoint for ``step`` atomically and return its directory."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / step_dir_name(step)
    partial = checkpoints_dir / f".partial-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for write in writers:
        write(partial)
    state = {"format_version": FORMAT_VERSION, "step": step, **trainer_state}
    (partial / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    described = describe_files(partial)
    files = sorted(described)
    manifest = {"format_version": FORMAT_VERSION, "step": step, "files": described}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    for name in [*files, MANIFEST]:
        fsync_file(partial / name)
    fsync_dir(partial)
    if final.exists():  # the same step saved again (e.g. a resumed run): replace it whole
        stale = checkpoints_dir / f".stale-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale)
    os.replace(partial, final)
    fsync_dir(checkpoints_dir)
    return final


def verify_checkpoint(path: Path, hash_files: bool = True) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest; return its trainer state.

    Raises CheckpointError on anything missing, truncated, altered or from a newer format.
    """
    if not path.exists():
        raise CheckpointError("checkpoint not found", str(path), hint="give a checkpoint directory or a run directory")
    if not path.is_dir():
        raise CheckpointError(
            "is not a checkpoint directory", str(path), hint="give the step-* directory, not a file in it"
        )
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            "incomplete checkpoint: no manifest.json (it was not finished writing)",
            str(path),
            hint="resume from an earlier checkpoint or from the run directory",
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = {name: (str(f["sha256"]), int(f["bytes"])) for name, f in manifest["files"].items()}
        version = int(manifest["format_version"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError("corrupt checkpoint: manifest.json is unreadable", str(path)) from err
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {version} is newer than this lmrunner understands ({FORMAT_VERSION})",
            str(path),
            hint="upgrade lmrunner",
        )
    for name, (sha256, size) in listed.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"corrupt checkpoint: {name} is missing", str(path))
        if file.stat().st_size != size:
            raise CheckpointError(f"corrupt checkpoint: {name} is truncated or altered (size differs)", str(path))
        if hash_files and not _hash_matches(file, sha256):
            raise CheckpointError(f"corrupt checkpoint: {name} does not match its sha256", str(path))
    if TRAINER_STATE not in listed:
        raise CheckpointError(f"corrupt checkpoint: the manifest does not list {TRAINER_STATE}", str(path))
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        int(state["step"]), dict(state["config"]), str(state["run_id"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"corrupt checkpoint: {TRAINER_STATE} lacks what resuming needs ({err})", str(path)
        ) from err
    return state


# (path, size, mtime, sha256) of files whose sha256 matched in this process. Choosing the latest
# checkpoint, planning a resume and loading it each verify the same files; for a large
# model, hashing them once instead of three times saves seconds. Any write changes mtime.
_hashed: set[tuple[str, int, int, str]] = set()


def _hash_matches(file: Path, sha256: str) -> bool:
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, sha256)
    if key in _hashed:
        return True
    if sha256_of(file) != sha256:
        return False
    _hashed.add(key)
    return True


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete-looking step-* directories, oldest first (partial ones are hidden names)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest_valid_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint that verifies completely (a damaged newer one is passed over)."""
    for candidate in reversed(list_checkpoints(checkpoints_dir)):
        try:
            verify_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def resolve_resume_path(path: Path) -> Path:
    """A checkpoint directory as given, or a run directory's latest valid checkpoint."""
    if (path / MANIFEST).exists() or _STEP_DIR.match(path.name):
        return path
    if path.is_dir() and (path / "checkpoints").is_dir():
        latest = latest_valid_checkpoint(path / "checkpoints")
        if latest is None:
            raise CheckpointError("run directory has no complete checkpoint", str(path))
        return latest
    if path.is_dir() and list_checkpoints(path):
        latest = latest_valid_checkpoint(path)
        if latest is None:
            raise CheckpointError("no complete checkpoint in this directory", str(path))
        return latest
    if not path.exists():
        raise CheckpointError("checkpoint not found", str(path), hint="give a checkpoint directory or a run directory")
    raise CheckpointError(
        "is neither a checkpoint nor a run directory with checkpoints",
        str(path),
        hint="give a run directory (outputs/<date>/<time>) or one of its checkpoints/step-* directories",
    )


def prune_checkpoints(checkpoints_dir: Path, keep_last: int | None, newest_step: int) -> list[Path]:
    """Keep the ``keep_last`` newest checkpoints up to ``newest_step`` (the one just written),
    delete the older ones, and return what was deleted. Directories of later steps (left by
    a run this one branched from, or damaged) are not this run's to judge: they stay."""
    if keep_last is None:
        return []
    ours = [p for p in list_checkpoints(checkpoints_dir) if int(_STEP_DIR.match(p.name).group(1)) <= newest_step]
    doomed = ours[:-keep_last]
    for path in doomed:
        if path.is_symlink():  # never follow a link out of the run directory
            path.unlink()
        else:
            shutil.rmtree(path)
    return doomed


def save_tensors(obj: Any, path: Path) -> None:
    torch.save(obj, path)


def load_tensors(path: Path) -> Any:
    # weights_only: a checkpoint can never run code when loaded.
    return torch.load(path, map_location="cpu", weights_only=True)
