"""The structured event log (``events.jsonl``): writing it, the hook that feeds it, reading it.

One JSON object per line, each with ``ts``, ``event``, ``run_id`` and ``step``. The file is
for programs; the console is for people.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import DiskWriteError
from trainer.files import os_error_cause
from trainer.training.hooks import Hook

if TYPE_CHECKING:
    from trainer.training.loop import Trainer


class EventLog:
    """Appends whole lines. Each event is one write straight to the file, so it is on disk even
    if the process is killed; a write that fails part way (a full disk) is taken back. A torn
    last line left by a killed process is repaired on opening (``repaired`` says how)."""

    def __init__(self, path: Path, run_id: str):
        self.path = path
        self.run_id = run_id
        # Append: a resumed run continues the same file after a ``resume`` event.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.repaired = _repair_torn_tail(self._fd)

    def emit(self, event: str, step: int, **fields: Any) -> dict[str, Any]:
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "event": event,
            "run_id": self.run_id,
            "step": step,
            **{key: _json_safe(value) for key, value in fields.items()},
        }
        line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        try:
            _append_whole(self._fd, line.encode("utf-8"))
        except OSError as err:
            raise DiskWriteError(
                f"writing the {event} event",
                str(self.path),
                os_error_cause(err) or str(err),
                hint=f"free space there, then continue with: python main.py --resume {self.path.parent}",
            ) from err
        return record

    def close(self) -> None:
        os.close(self._fd)


class EventLogHook(Hook):
    """Writes every reported event to events.jsonl."""

    name = "event_log"

    def __init__(self, events: EventLog):
        self.events = events

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        fields = {k: v for k, v in record.items() if k not in ("event", "step")}
        self.events.emit(record["event"], record["step"], **fields)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in the file. A torn last line (the writer was killed, or the disk filled,
    mid-line) is not an event and is passed over; a damaged line before it is an error."""
    *whole, last = path.read_bytes().split(b"\n")  # last: b"" when the file ends with a newline
    events = [_parse_line(path, number, line) for number, line in enumerate(whole, 1) if line.strip()]
    with contextlib.suppress(ValueError, RecursionError):  # UnicodeDecodeError too: a line cut mid-character
        if last.strip():
            events.append(json.loads(last))
    return events


def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as err:  # RecursionError: a line nested too deep
        raise ValueError(
            f"{path}, line {number}: not a JSON event ({err}); only a torn last line is passed over"
        ) from err


def _append_whole(fd: int, data: bytes) -> None:
    """Append all of ``data`` or, if a write fails part way, none of it (one writer: rank 0)."""
    start = os.fstat(fd).st_size
    try:
        written = 0
        while written < len(data):  # a nearly full disk may take part of a write, then fail
            written += os.write(fd, data[written:])
    except OSError:
        with contextlib.suppress(OSError):  # shrinking a file needs no space
            os.ftruncate(fd, start)
        raise


def _repair_torn_tail(fd: int) -> str | None:
    """A file whose last line has no newline: end it if it is a whole event, else drop it."""
    size = os.fstat(fd).st_size
    tail_start = _after_last_newline(fd, size)
    if tail_start == size:
        return None
    tail = os.pread(fd, size - tail_start, tail_start)
    try:
        json.loads(tail)
    except (ValueError, RecursionError):
        os.ftruncate(fd, tail_start)
        return f"dropped a torn last line of {size - tail_start} bytes"
    os.write(fd, b"\n")
    return "ended the last line"


def _after_last_newline(fd: int, size: int, block: int = 1 << 16) -> int:
    """The offset just after the file's last newline (0 if it has none), reading backwards."""
    end = size
    while end > 0:
        start = max(0, end - block)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


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
