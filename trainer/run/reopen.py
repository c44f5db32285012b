"""Reopening a run directory to continue it: dealing with what a killed process left behind.

Runs on rank 0 alone (the only writer), before the resumed run writes anything, and says
what it did: a console line for each thing, and the fields of the ``resume`` event. (A torn
last line of events.jsonl is repaired by ``EventLog`` itself when it opens the file.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from trainer.checkpoint.find import Damaged, remove_stale_leftovers, set_aside
from trainer.run.events import EventLog

log = logging.getLogger("lmrunner")


@dataclass
class Reopened:
    """What reopening did, as the resume event records it."""

    event_log_repaired: str | None = None  # what was done to a torn last line of events.jsonl
    cleaned: list[str] = field(default_factory=list)  # hidden leftovers of killed writes, removed
    set_aside: list[dict[str, str]] = field(default_factory=list)  # damaged checkpoints: path, reason, moved_to


def reopen_for_writing(run_dir: Path, events: EventLog, damaged: tuple[Damaged, ...]) -> Reopened:
    """Called with the run's EventLog open (which repaired a torn last line, if any) and the
    damaged checkpoints newer than the one resumed (``ResumePlan.damaged``)."""
    if events.repaired:
        log.warning("%s: %s (left by a killed process)", events.path, events.repaired)
    moved = []
    for checkpoint in damaged:
        aside = set_aside(checkpoint.path)
        log.warning("skipped checkpoint %s: %s; moved it aside to %s", checkpoint.path, checkpoint.reason, aside)
        moved.append({"path": str(checkpoint.path), "reason": checkpoint.reason, "moved_to": str(aside)})
    cleaned = remove_stale_leftovers(run_dir / "checkpoints")
    for path in cleaned:
        log.info("removed %s (left by a killed checkpoint write)", path)
    return Reopened(event_log_repaired=events.repaired, cleaned=[str(path) for path in cleaned], set_aside=moved)
