"""A run's curves as its events.jsonl finally tells them: what the pictures and ``runs`` read.

A resumed run repeats the steps after its checkpoint, and the lines a killed process wrote
for those steps no longer count: after a ``resume`` event, steps from ``from_step`` on
supersede every earlier line for them. No torch here: ``runs`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import UsageError
from trainer.run.events import read_events

EVENTS_FILE = "events.jsonl"
X_AXES = ("step", "tokens", "time")
_X_FIELDS = {"tokens": "tokens_seen", "time": "elapsed_s"}


@dataclass
class RunHistory:
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)  # as the latest session ran it
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> its step event
    evals: dict[int, float] = field(default_factory=dict)  # step -> val_loss

    def train(self, name: str = "loss") -> tuple[list[int], list[float]]:
        """A field of the step events (loss, lr, grad_norm, ...), by step."""
        points = [(step, event[name]) for step, event in sorted(self.steps.items()) if is_number(event.get(name))]
        return [s for s, _ in points], [v for _, v in points]

    def val(self) -> tuple[list[int], list[float]]:
        points = [(step, loss) for step, loss in sorted(self.evals.items()) if is_number(loss)]
        return [s for s, _ in points], [v for _, v in points]

    def x_values(self, steps: list[int], axis: str) -> list[float]:
        """Where ``steps`` lie on the x axis: the step itself, the tokens seen by then, or the
        seconds of training by then (as the step events recorded them)."""
        if axis == "step":
            return [float(s) for s in steps]
        name = _X_FIELDS[axis]
        missing = [s for s in steps if name not in self.steps.get(s, {})]
        if missing and axis == "tokens":  # runs from before step events counted tokens
            per_step = self.config.get("batch_size", 0) * self.config.get("max_seq_len", 0)
            return [self.steps.get(s, {}).get(name, s * per_step) for s in steps]
        if missing:
            raise UsageError(
                f"{self.run_dir} has no {name} in its step events (written by an older lmrunner)",
                hint="plot it by step or by tokens: --x step",
            )
        return [self.steps[s][name] for s in steps]


def load_history(run_dir: Path) -> RunHistory:
    """The run's curves, each step as the last session that ran it reported it."""
    return history_of(run_dir, read_events(run_dir / EVENTS_FILE))


def history_of(run_dir: Path, events: list[dict[str, Any]]) -> RunHistory:
    history = RunHistory(run_dir)
    for event in events:
        kind, step = event.get("event"), event.get("step")
        if kind in ("run_start", "resume"):
            history.config = event.get("config") or history.config
        if kind == "resume":
            _forget_after(history, event.get("from_step", 0))
        elif kind == "step":
            history.steps[step] = event
        elif kind == "eval":
            history.evals[step] = event.get("val_loss")
    return history


def _forget_after(history: RunHistory, step: int) -> None:
    """What a killed process logged after the checkpoint the run resumed from."""
    history.steps = {s: e for s, e in history.steps.items() if s <= step}
    history.evals = {s: v for s, v in history.evals.items() if s <= step}


def is_number(value: Any) -> bool:
    """A number as events.jsonl holds one (NaN and infinity are written as strings)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
