"""The structured event log (``events.jsonl``) and the run metadata that heads it.

One JSON object per line, each with ``ts``, ``event``, ``run_id`` and ``step``. The file is
for programs; the console is for people.
"""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


def read_events(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def git_commit() -> str | None:
    """The commit of the lmrunner source tree, with '-dirty' for uncommitted changes."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True)
    return result.stdout.strip()


def _json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON: write them as strings rather than break the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
