"""Optimizer and RNG state files: torch tensors in plain containers, never arbitrary pickle."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from trainer.errors import CheckpointError

# How torch's weights_only unpickler names what it refused: "... unsupported GLOBAL posix.system ..."
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def save_tensors(obj: Any, path: Path) -> None:
    # Through a Python file, so a failed write (a full disk) raises OSError with its errno under
    # torch's own error; given the path, torch reports only "PytorchStreamWriter failed".
    with path.open("wb") as handle:
        torch.save(obj, handle)


def load_tensors(path: Path) -> Any:
    """The tensors saved in ``path``, or one line saying why not. weights_only: a checkpoint can
    never run code when loaded; what it refuses is reported without torch's several lines,
    which suggest loading the file unsafely."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": lines on top of the one error
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # anything at all can come out of bytes someone else wrote
        refused = _REFUSED_GLOBAL.search(str(err))
        why = (
            f"asks to load {refused.group(1)}, which a tensor file never does; refused without running it"
            if refused
            else f"is not a readable file of plain tensors ({type(err).__name__})"
        )
        raise CheckpointError(
            f"{path.name} {why}",
            str(path.parent),
            hint="it was altered after it was saved: resume from another checkpoint",
        ) from err
