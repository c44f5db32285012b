"""Durations as people read them, for the console and ``runs`` alike (no imports: runs starts fast)."""

from __future__ import annotations


def clock(seconds: float | None) -> str:
    """1:02:03 for a duration; ? before there is one."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
