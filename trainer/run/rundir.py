"""Run directories: ``outputs/<date>/<time>[-<n>]/``, one per run, never shared.

The layout is the same from both front doors: ``.hydra/`` (the composed config and the
overrides), ``config.yaml`` (the resolved TrainingConfig: seed drawn, schedule fixed),
``events.jsonl``, ``train.log`` and ``checkpoints/``.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trainer.checkpoint.find import list_checkpoints
from trainer.errors import ConfigError


def create_run_dir(base: Path, now: datetime | None = None) -> Path:
    """Make and return a new run directory ``base/<date>/<time>[-<n>]``."""
    now = now or datetime.now()
    return reserve_run_dir(base / now.strftime("%Y-%m-%d"), now.strftime("%H-%M-%S"))


def reserve_run_dir(day: Path, stamp: str) -> Path:
    """Create ``day/stamp``, or ``day/stamp-1``, ``-2``, ... if taken. mkdir either creates
    a directory or fails, so two runs started in the same second, even in two processes,
    never get the same one."""
    day.mkdir(parents=True, exist_ok=True)
    for n in itertools.count():
        candidate = day / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def write_composed_config(run_dir: Path, composed: dict[str, Any], overrides: list[str]) -> None:
    """What the user asked for, before anything was resolved (Hydra's .hydra/ layout)."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    (hydra_dir / "config.yaml").write_text(
        yaml.safe_dump(composed, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides, allow_unicode=True), encoding="utf-8")


def write_resolved_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint lives in, if it lives in one."""
    run_dir = checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints" and (run_dir / "events.jsonl").is_file():
        return run_dir
    return None


def holds_run(run_dir: Path) -> bool:
    """Whether a run has already used this directory (its event log or checkpoints are there)."""
    return (run_dir / "events.jsonl").exists() or (run_dir / "checkpoints").exists()


def refuse_used_run_dir(run_dir: Path) -> None:
    """Two runs never share a directory: a second run_start and a mix of checkpoints in one
    would make --resume pick the wrong one."""
    if holds_run(run_dir):
        raise ConfigError(
            f"{run_dir} already holds a run (its events.jsonl or checkpoints/)",
            hint=f"continue that run with resume={run_dir} (or --resume {run_dir}), or choose a new directory",
        )


def trained_anything(run_dir: Path) -> bool:
    """Whether a run in this directory took a step or saved a checkpoint."""
    if list_checkpoints(run_dir / "checkpoints"):
        return True
    try:
        with (run_dir / "events.jsonl").open(encoding="utf-8") as handle:
            return any(_event_of(line) == "step" for line in handle)
    except OSError:
        return False


def _event_of(line: str) -> str | None:
    try:
        return json.loads(line).get("event")
    except (ValueError, AttributeError):  # a torn last line
        return None
