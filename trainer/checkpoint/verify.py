"""Verifying a checkpoint against its manifest before anything in it is loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trainer.checkpoint.layout import MANIFEST, NEWEST_FORMAT_VERSION, STEP_DIR_PATTERN, TRAINER_STATE
from trainer.errors import CheckpointError
from trainer.files import sha256_of


def verify_checkpoint(path: Path, hash_files: bool = True) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest; return its trainer state.

    Raises CheckpointError on anything missing, truncated, altered or from a newer format.
    """
    refuse_link(path)
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
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:  # Recursion: nested deep
        raise CheckpointError("corrupt checkpoint: manifest.json is unreadable", str(path)) from err
    if version > NEWEST_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {version} is newer than this lmrunner understands ({NEWEST_FORMAT_VERSION})",
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
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise CheckpointError(
            f"corrupt checkpoint: {TRAINER_STATE} lacks what resuming needs ({err})", str(path)
        ) from err
    return state


def refuse_link(path: Path) -> None:
    """A step-* directory is always a real directory of its run: one that is a symbolic link
    (dangling, a loop, to anything at all) was not written by lmrunner, and following it would
    resume, prune or replace something outside the run."""
    if path.is_symlink() and STEP_DIR_PATTERN.match(path.name):
        raise CheckpointError(
            f"is a symbolic link (to {os.readlink(path)}), not a checkpoint directory",
            str(path),
            hint="remove the link, or resume from the directory it points to",
        )


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
