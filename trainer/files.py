"""File helpers shared by checkpoints and the registry (no torch here)."""

from __future__ import annotations

import hashlib
import os
import re
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


# How Rust libraries (safetensors) spell the operating system's error: "... (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_cause(err: BaseException) -> str | None:
    """Why a write failed, in words, if the operating system said why: the first such error in
    ``err``'s chain ("No space left on device"), since libraries raise their own error on top
    of the real one (torch: "[enforce fail at inline_container.cc] unexpected pos ...")."""
    for link in reversed(_exception_chain(err)):  # the oldest, the first to go wrong, first
        if isinstance(link, OSError) and link.errno:
            return os.strerror(link.errno)
        match = _RUST_OS_ERROR.search(str(link))
        if match:
            return os.strerror(int(match.group(1)))
    return None


def _exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from or while handling, newest first."""
    chain: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain
