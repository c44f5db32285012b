"""The structured event log (``events.jsonl``): writing it, the hook that feeds it, reading it.

One JSON object per line, each with ``ts``, ``event``, ``run_id`` and ``step``. The file is
for programs; the console is for people.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.training.hooks import Hook

if TYPE_CHECKING:
    from trainer.training.loop import Trainer


class EventLog:
    def __init__(self, path: Path, run_id: str):
        self.path = path
        self.run_id = run_id
        # Append: a resumed run continues the same file after a ``resume`` event.
        # Line-buffered, so every event is on disk even if the process is killed.
        self._file = path.open("a", encoding="utf-8", buffering=1)

    def emit(self, event: str, step: int, **fields: Any) -> dict[str, Any]:
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "event": event,
            "run_id": self.run_id,
            "step": step,
            **{key: _json_safe(value) for key, value in fields.items()},
        }
        self._file.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        return record

    def close(self) -> None:
        self._file.close()


class EventLogHook(Hook):
    """Writes every reported event to events.jsonl."""

    name = "event_log"

    def __init__(self, events: EventLog):
        self.events = events

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        fields = {k: v for k, v in record.items() if k not in ("event", "step")}
        self.events.emit(record["event"], record["step"], **fields)


def read_events(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON: write them as strings rather than break the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
