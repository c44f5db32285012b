"""Optimizer and RNG state files: torch tensors in plain containers, never arbitrary pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save_tensors(obj: Any, path: Path) -> None:
    # Through a Python file, so a failed write (a full disk) raises OSError with its errno under
    # torch's own error; given the path, torch reports only "PytorchStreamWriter failed".
    with path.open("wb") as handle:
        torch.save(obj, handle)


def load_tensors(path: Path) -> Any:
    # weights_only: a checkpoint can never run code when loaded.
    return torch.load(path, map_location="cpu", weights_only=True)
