"""metrics.csv in the run directory: one row per step, for a spreadsheet or pandas.

A step's validation loss goes on its row (the eval event follows the step event it belongs
to). A continued run first drops the rows after its checkpoint, so each step is one row.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from trainer.run.loggers.base import TrackedRun, TrackerHook

METRICS_CSV = "metrics.csv"
COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen", "elapsed_s", "val_loss")
_COLUMN_OF = {"train/" + c: c for c in COLUMNS} | {"val/loss": "val_loss"}


class CsvLogger(TrackerHook):
    name = "csv"

    def start(self, run: TrackedRun) -> None:
        path = run.run_dir / METRICS_CSV
        if run.resumed_from is not None and path.exists():
            _keep_rows_up_to(path, run.resumed_from)
        new_file = not path.exists()
        self.handle = path.open("a", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=COLUMNS, extrasaction="ignore")
        if new_file:
            self.writer.writeheader()
        self.row: dict[str, float] | None = None  # the latest step's, until its eval is known

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        values = {_COLUMN_OF[name]: value for name, value in scalars.items() if name in _COLUMN_OF}
        if self.row is not None and self.row["step"] == step and "loss" not in values:
            self.row.update(values)  # the eval of the step on the row
            return
        self._write_row()
        self.row = {"step": step, **values}

    def log_text(self, step: int, text: str) -> None:
        pass  # samples are text, not a column: events.jsonl and the other trackers have them

    def flush(self) -> None:
        self._write_row()
        self.handle.flush()

    def end(self, status: str) -> None:
        self.flush()
        self.handle.close()

    def _write_row(self) -> None:
        if self.row is not None:
            self.writer.writerow(self.row)
            self.row = None


def _keep_rows_up_to(path: Path, step: int) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("step", "").isdigit() and int(row["step"]) <= step]
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)
