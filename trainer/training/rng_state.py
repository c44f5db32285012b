"""Every random number generator a training step draws from, captured and restored whole.

Dropout draws from the global CPU generator (and the CUDA or MPS one on those devices);
sampling and the data order have generators of their own. A checkpoint holds these states,
so a resumed run draws the same numbers as one that never stopped.
"""

from __future__ import annotations

from typing import Any

import torch


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():  # this process's device only: a checkpoint resumes on fewer GPUs
        state["torch_cuda"] = torch.cuda.get_rng_state()
    if torch.backends.mps.is_available():
        state["torch_mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = state["torch_cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, list) else cuda)  # a list: older checkpoints
    if "torch_mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["torch_mps"])


def rng_file_contents(rng_states: list[dict[str, Any]]) -> dict[str, Any]:
    """What rng_state.pt holds for the ranks' states (in rank order): rank 0's at the top level
    (what a single process restores) and, with several ranks, all of them under "per_rank",
    so a run resumed on as many ranks gets each its own dropout stream back."""
    return {**rng_states[0], "per_rank": rng_states} if len(rng_states) > 1 else rng_states[0]
