"""Past and present runs, found by their events.jsonl and summarised from it (``runs list``).

Read for speed: a 10,000-step run has 10,000 step lines, and the listing needs only the last
few of them, so step lines are told apart by their first bytes and left unparsed; every
other event (starts, resumes, evaluations, the end) is parsed. A line that does not parse (a
torn last line, a damaged one) is passed over: a listing shows what can be read.

Status: a run_end after the run's latest start gives it (completed, interrupted, failed).
Without one, the run is ``running`` while the process that writes it is alive (the host and
pid in its latest run_start or resume event; on another host, while events.jsonl changed in
the last STALE_AFTER_S seconds), and ``killed`` once it is gone (SIGKILL, out of memory, a
power cut): ``--resume`` continues it from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trainer.run.history import EVENTS_FILE, is_number

RUN_ROOTS = ("outputs", "multirun")
STALE_AFTER_S = 15 * 60
STATUSES = ("running", "completed", "interrupted", "failed", "killed")
# Folders inside a run directory that hold no runs: not walked into.
_NOT_RUNS = {"checkpoints", "tensorboard", "wandb", ".hydra", "mlruns", ".submitit"}
# EventLog writes ts first and event second: a step line is known by its first bytes.
_STEP_PREFIX = re.compile(rb'^\{"ts": "[^"]*", "event": "step"')
_TS = re.compile(rb'^\{"ts": "([^"]*)"')
_RATE_STEPS = 20  # tokens/s: the median of the last this many steps


@dataclass
class RunSummary:
    run_dir: str
    run_id: str | None
    started: str | None  # the run_start event's time (UTC, ISO 8601)
    status: str
    model: str | None  # the registry model's name, or the architecture trained from scratch
    parameters: int | None
    steps: int  # the last step done
    max_steps: int | None  # as the latest session planned it
    loss: float | None  # the last training loss
    val_loss: float | None  # the last validation loss
    wall_time_s: float | None  # from each session's first event to its last, summed
    tokens_per_s: float | None


def find_runs(roots: list[Path]) -> list[Path]:
    """Every directory under ``roots`` that holds an events.jsonl, in path order."""
    found = []
    for root in roots:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = sorted(d for d in subdirectories if d not in _NOT_RUNS)
            if EVENTS_FILE in files:
                found.append(Path(directory))
    return sorted(found)


def summarize_run(run_dir: Path, now: float | None = None) -> RunSummary:
    return _summary(run_dir, _scan(run_dir), now)


def run_details(run_dir: Path) -> dict[str, Any]:
    """What ``runs show`` prints: the summary, the config the run used, the model and its
    lineage, the data, the checkpoints and what the trackers and pictures left."""
    import yaml

    from trainer.checkpoint.find import list_checkpoints
    from trainer.run.loggers.base import TRACKERS_FILE, trackers_of
    from trainer.run.loggers.csv_logger import METRICS_CSV
    from trainer.run.loggers.tensorboard_logger import TENSORBOARD_DIR
    from trainer.run.loggers.wandb_logger import WANDB_DIR
    from trainer.run.plots import LOSS_PNG

    scan = _scan(run_dir)
    start = scan.first_start or {}
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    return {
        **asdict(_summary(run_dir, scan, None)),
        "model_details": start.get("model"),
        "lineage": start.get("lineage"),
        "fine_tune": start.get("fine_tune"),
        "data": start.get("data"),
        "checkpoints": [str(p) for p in list_checkpoints(run_dir / "checkpoints")],
        "files": [
            name
            for name in (LOSS_PNG, METRICS_CSV, TENSORBOARD_DIR, WANDB_DIR, TRACKERS_FILE)
            if (run_dir / name).exists()
        ],
        "trackers": trackers_of(run_dir),
        "config": config or (scan.latest_start or {}).get("config"),
    }


def _scan(run_dir: Path) -> _Scan:
    scan = _Scan()
    for line in (run_dir / EVENTS_FILE).read_bytes().split(b"\n"):
        if line.strip():
            scan.add(line)
    return scan


def _summary(run_dir: Path, scan: _Scan, now: float | None) -> RunSummary:
    start = scan.first_start or {}
    model = start.get("model") or {}
    return RunSummary(
        run_dir=str(run_dir),
        run_id=start.get("run_id"),
        started=start.get("ts"),
        status=_status(scan, run_dir, time.time() if now is None else now),
        model=model.get("model_name") or model.get("architecture_type"),
        parameters=model.get("num_parameters"),
        steps=scan.last_step.get("step", 0),
        max_steps=(scan.latest_start or {}).get("config", {}).get("max_steps"),
        loss=_number(scan.last_step.get("loss")),
        val_loss=_number(scan.last_eval.get("val_loss")),
        wall_time_s=scan.wall_time_s(),
        tokens_per_s=scan.tokens_per_s(),
    )


class _Scan:
    """One pass over the lines: what the summary needs, with step lines left unparsed."""

    def __init__(self) -> None:
        self.first_start: dict[str, Any] | None = None
        self.latest_start: dict[str, Any] | None = None  # the latest run_start or resume
        self.end_after_latest_start: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] = {}
        self.recent_steps: deque[bytes] = deque(maxlen=_RATE_STEPS)
        self.sessions: list[list[str | None]] = []  # each session's first and last ts
        self.last_line = b""  # the last whole line: the time the run was last seen

    def add(self, line: bytes) -> None:
        if _STEP_PREFIX.match(line):
            self.recent_steps.append(line)
        else:
            self._event(line)
        if line.rstrip().endswith(b"}"):  # a whole line (a torn one has lost its end)
            self.last_line = line

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return  # torn or damaged: not an event
        kind = event.get("event")
        if kind in ("run_start", "resume"):
            self.first_start = self.first_start or event
            self.latest_start, self.end_after_latest_start = event, None
            self._end_session()
            self.sessions.append([event.get("ts"), None])
        elif kind == "run_end":
            self.end_after_latest_start = event
        elif kind == "eval":
            self.last_eval = event
        elif kind == "step":  # written some other way than EventLog's (ts first, then event)
            self.recent_steps.append(line)

    def _end_session(self) -> None:
        """A session ends with the last line before the next one starts, or the file's last."""
        match = _TS.match(self.last_line)
        if self.sessions and match:
            self.sessions[-1][1] = match.group(1).decode()

    @property
    def last_step(self) -> dict[str, Any]:
        for line in reversed(self.recent_steps):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return {}

    def tokens_per_s(self) -> float | None:
        rates = []
        for line in self.recent_steps:
            try:
                rates.append(json.loads(line)["tokens_per_s"])
            except (ValueError, KeyError):
                continue
        return round(statistics.median(rates), 1) if rates else None

    def wall_time_s(self) -> float | None:
        if not self.sessions:
            return None
        self._end_session()
        spans = [_seconds_between(first, last) for first, last in self.sessions if first and last]
        return round(sum(span for span in spans if span is not None), 3)


def _status(scan: _Scan, run_dir: Path, now: float) -> str:
    if scan.end_after_latest_start is not None:
        return scan.end_after_latest_start.get("status", "failed")
    process = (scan.latest_start or {}).get("process") or {}
    if process.get("host") == socket.gethostname() and isinstance(process.get("pid"), int):
        return "running" if _alive(process["pid"]) else "killed"
    changed = (run_dir / EVENTS_FILE).stat().st_mtime
    return "running" if now - changed < STALE_AFTER_S else "killed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (ours or not)?
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _seconds_between(first: str, last: str) -> float | None:
    try:
        return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    except (ValueError, TypeError):  # not a time, or one without its zone
        return None


def _number(value: Any) -> float | None:
    return value if is_number(value) else None
