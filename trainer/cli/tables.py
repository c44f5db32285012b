"""Plain-text tables and short numbers for the commands that list things (models, runs)."""

from __future__ import annotations


def table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def short_count(value: int | None) -> str:
    """494.0M, 21.2K: a count people read at a glance."""
    if value is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)
