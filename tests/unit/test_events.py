"""events.jsonl stays whole lines: a failed write leaves nothing torn, a torn tail is repaired."""

import errno
import json
import os

import pytest

import trainer.run.events
from trainer.errors import DiskWriteError
from trainer.run.events import EventLog, read_events


def disk_fills_after(monkeypatch, allowed: int):
    """os.write writes ``allowed`` more bytes, then fails as a full disk does."""
    real_write = os.write
    left = {"bytes": allowed}

    def write(fd, data):
        if left["bytes"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: left["bytes"]]))
        left["bytes"] -= written
        return written

    monkeypatch.setattr(trainer.run.events.os, "write", write)


def test_an_event_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "r")
    log.emit("step", 1, loss=1.5)
    before = path.read_bytes()
    disk_fills_after(monkeypatch, 20)  # the next line gets only 20 bytes in
    with pytest.raises(DiskWriteError, match="No space left on device") as info:
        log.emit("step", 2, loss=1.25, text="x" * 100)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before  # the torn bytes were taken back
    monkeypatch.undo()
    log.emit("step", 3, loss=1.0)
    log.close()
    assert [e["step"] for e in read_events(path)] == [1, 3]


def test_opening_a_log_with_a_torn_last_line_drops_it(tmp_path):
    path = tmp_path / "events.jsonl"
    whole = json.dumps({"event": "step", "step": 1}) + "\n"
    path.write_text(whole + '{"event": "step", "st')  # killed, or the disk filled, mid-line
    log = EventLog(path, "r")
    assert log.repaired == "dropped a torn last line of 21 bytes"
    log.emit("resume", 1)
    log.close()
    assert [e["event"] for e in read_events(path)] == ["step", "resume"]
    assert path.read_text().startswith(whole)


def test_an_unterminated_but_whole_last_event_is_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"event": "step", "step": 1}))  # everything but the newline
    log = EventLog(path, "r")
    assert log.repaired == "ended the last line"
    log.emit("resume", 1)
    log.close()
    assert [e["event"] for e in read_events(path)] == ["step", "resume"]


def test_a_whole_log_needs_no_repair(tmp_path):
    path = tmp_path / "events.jsonl"
    EventLog(path, "r").emit("step", 1)
    log = EventLog(path, "r")
    assert log.repaired is None
    log.close()


def test_read_events_tolerates_a_torn_last_line_only(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event": "a"}\n{"event": "b"}\n{"event": "c", "text": "caf\xc3')  # cut mid-character
    assert [e["event"] for e in read_events(path)] == ["a", "b"]
    path.write_bytes(b'{"event": "a"}\n{"event": "b"\n{"event": "c"}\n')
    with pytest.raises(ValueError, match=r"events.jsonl, line 2: not a JSON event"):
        read_events(path)
    deep = b"[" * 100_000 + b"]" * 100_000  # nested past Python's recursion limit
    path.write_bytes(b'{"event": "a"}\n' + deep + b'\n{"event": "c"}\n')
    with pytest.raises(ValueError, match=r"events.jsonl, line 2: not a JSON event"):
        read_events(path)
    path.write_bytes(b'{"event": "a"}\n' + deep)  # a deep torn tail is passed over like any other
    assert [e["event"] for e in read_events(path)] == ["a"]
