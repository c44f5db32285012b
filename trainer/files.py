"""File helpers shared by checkpoints and the registry (no torch here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``directory``, by relative path."""
    return {
        str(path.relative_to(directory)): {"sha256": sha256_of(path), "bytes": path.stat().st_size}
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
