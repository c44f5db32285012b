"""Multirun sweeps: one summary line per job as it ends, a table and summary.png when the sweep ends.

``SweepSummary`` is a Hydra callback (configured in conf/config.yaml). ``on_job_end`` runs
where the job ran (in a worker process under the joblib launcher, on a cluster node under
submitit), so lines are appended under a file lock; ``on_multirun_end`` runs once, in the
launching process, prints the table and draws every job's curves into summary.png.

A job returns a ``JobOutcome`` to Hydra: the summary line's fields, and, read as a float, the
run's ``sweep_metric``, the objective an optimizing sweeper (Optuna) minimises.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainer.errors import TrainingInterrupted
from trainer.training.distributed import current

log = logging.getLogger("lmrunner")

SUMMARY_FILE = "summary.jsonl"
SUMMARY_PNG = "summary.png"


@dataclass(frozen=True)
class JobOutcome:
    """What a job returns to Hydra. Hydra hands it to the sweeper: the basic sweeper ignores
    it; an optimizing one (Optuna) takes ``float(outcome)`` as the trial's value, which is the
    run's ``sweep_metric``. A job without that value (it failed, or never evaluated) raises
    TypeError there, which Optuna records as a failed trial. The summary line holds the rest."""

    status: str
    exit_code: int
    error: str | None
    run_dir: str | None
    steps: int | None
    final_loss: float | None
    final_val_loss: float | None
    wall_time_s: float | None
    sweep_metric: str = "final_val_loss"

    def __float__(self) -> float:
        value = getattr(self, self.sweep_metric)
        if value is None:
            raise TypeError(str(self))
        return float(value)

    def __str__(self) -> str:  # what Optuna quotes for a trial it could not score
        if self.status != "completed":
            return f"job {self.status}: {self.error}"
        value = getattr(self, self.sweep_metric)
        missing = " (the run reported none)" if value is None else ""
        return f"{self.sweep_metric}={value}{missing}"

    def summary(self) -> dict[str, Any]:
        """The summary line's fields (besides job and overrides)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sweep_metric"}


def job_outcome(result=None, error: BaseException | None = None, sweep_metric: str = "final_val_loss") -> JobOutcome:
    if error is not None:
        interrupted = isinstance(error, TrainingInterrupted)
        return JobOutcome(
            status="interrupted" if interrupted else "failed",
            exit_code=getattr(error, "exit_code", 1),
            error=str(error),
            run_dir=None,
            steps=None,
            final_loss=None,
            final_val_loss=None,
            wall_time_s=None,
            sweep_metric=sweep_metric,
        )
    return JobOutcome(
        status=result.status,
        exit_code=0,
        error=None,
        run_dir=str(result.run_dir),
        steps=result.steps,
        final_loss=result.final_loss,
        final_val_loss=result.final_val_loss,
        wall_time_s=result.wall_time_s,
        sweep_metric=sweep_metric,
    )


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra if job_return.hydra_cfg else None
        if hydra_cfg is None or hydra_cfg.mode.name != "MULTIRUN" or not current().is_main:
            return  # under DDP every rank ends the job; rank 0 speaks for it
        if job_return.status == JobStatus.COMPLETED:
            outcome = job_return.return_value
        else:  # the job raised past lmrunner's own handling
            outcome = job_outcome(error=job_return._return_value)
        # The job's own directory is resolved once; sweep.dir may hold a ${now:} pattern.
        sweep_dir = Path(hydra_cfg.runtime.output_dir).parent
        append_summary_line(sweep_dir, hydra_cfg.job.num, list(job_return.overrides or []), outcome)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not current().is_main:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        lines = read_summary(sweep_dir / SUMMARY_FILE)
        Path(str(sweep_dir / SUMMARY_FILE) + ".lock").unlink(missing_ok=True)
        print(format_table(lines))
        print(f"summary: {sweep_dir / SUMMARY_FILE}")
        picture = draw_summary(sweep_dir, lines)
        if picture is not None:
            print(f"summary.png: {picture}")


def append_summary_line(sweep_dir: Path, job: int, overrides: list[str], outcome: JobOutcome) -> None:
    line = {"job": job, "overrides": overrides, **outcome.summary()}
    summary = sweep_dir / SUMMARY_FILE
    with FileLock(str(summary) + ".lock"), summary.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def draw_summary(sweep_dir: Path, lines: list[dict[str, Any]]) -> Path | None:
    """summary.png: every job's curves that has a run directory, labelled by the overrides that
    tell the jobs apart; one console line instead if it cannot be drawn."""
    from trainer.run.history import load_history
    from trainer.run.plots import draw_overlay, draw_quietly

    jobs = [line for line in lines if line.get("run_dir")]
    if not jobs:
        return None
    labels = distinguishing_labels([line["overrides"] for line in jobs])

    def draw() -> Path:
        runs = [
            (f"{line['job']}: {label}", load_history(Path(line["run_dir"])))
            for line, label in zip(jobs, labels, strict=True)
        ]
        return draw_overlay(runs, sweep_dir / SUMMARY_PNG)

    return draw_quietly(draw, sweep_dir / SUMMARY_PNG)


def distinguishing_labels(overrides: list[list[str]]) -> list[str]:
    """Each job's overrides less those every job shares (max_steps=2 on all says nothing),
    numbers to four digits (Optuna draws learning_rate=0.00024156772025296256)."""
    shared = set.intersection(*(set(job) for job in overrides)) if len(overrides) > 1 else set()
    return [" ".join(_short(o) for o in job if o not in shared) or "(no overrides)" for job in overrides]


def _short(override: str) -> str:
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}{sep}{number:.4g}" if len(value) > 6 and "." in value else override


def read_summary(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(lines, key=lambda line: line["job"])


def failed_jobs(sweep_dir: Path) -> int:
    """How many jobs of the sweep did not complete (what the sweep's exit code says)."""
    return sum(line["status"] != "completed" for line in read_summary(sweep_dir / SUMMARY_FILE))


def format_table(lines: list[dict[str, Any]]) -> str:
    header = ("job", "overrides", "status", "steps", "loss", "val_loss", "wall_s", "run dir / error")
    rows = [header]
    for line in lines:
        rows.append(
            (
                str(line["job"]),
                " ".join(line["overrides"]),
                line["status"],
                _fmt(line["steps"], "d"),
                _fmt(line["final_loss"], ".4f"),
                _fmt(line["final_val_loss"], ".4f"),
                _fmt(line["wall_time_s"], ".1f"),
                line["run_dir"] if line["status"] == "completed" else (line["error"] or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)
