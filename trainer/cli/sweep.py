"""Multirun sweeps: one summary line per job as it ends, a table when the sweep ends.

``SweepSummary`` is a Hydra callback (configured in conf/config.yaml). ``on_job_end`` runs
where the job ran (in a worker process under the joblib launcher, on a cluster node under
submitit), so lines are appended under a file lock; ``on_multirun_end`` runs once, in the
launching process, and prints the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainer.errors import TrainingInterrupted
from trainer.training.distributed import current

SUMMARY_FILE = "summary.jsonl"


def job_outcome(result=None, error: BaseException | None = None) -> dict[str, Any]:
    """What a job returns to Hydra and what its summary line holds (besides job and overrides)."""
    if error is not None:
        interrupted = isinstance(error, TrainingInterrupted)
        return {
            "status": "interrupted" if interrupted else "failed",
            "exit_code": getattr(error, "exit_code", 1),
            "error": str(error),
            "run_dir": None,
            "steps": None,
            "final_loss": None,
            "final_val_loss": None,
            "wall_time_s": None,
        }
    return {
        "status": result.status,
        "exit_code": 0,
        "error": None,
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "final_val_loss": result.final_val_loss,
        "wall_time_s": result.wall_time_s,
    }


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra if job_return.hydra_cfg else None
        if hydra_cfg is None or hydra_cfg.mode.name != "MULTIRUN" or not current().is_main:
            return  # under DDP every rank ends the job; rank 0 speaks for it
        if job_return.status == JobStatus.COMPLETED:
            outcome = job_return.return_value
        else:  # the job raised past lmrunner's own handling
            outcome = job_outcome(error=job_return._return_value)
        line = {"job": hydra_cfg.job.num, "overrides": list(job_return.overrides or []), **outcome}
        # The job's own directory is resolved once; sweep.dir may hold a ${now:} pattern.
        summary = Path(hydra_cfg.runtime.output_dir).parent / SUMMARY_FILE
        with FileLock(str(summary) + ".lock"), summary.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not current().is_main:
            return
        summary = Path(config.hydra.sweep.dir) / SUMMARY_FILE
        lines = read_summary(summary)
        Path(str(summary) + ".lock").unlink(missing_ok=True)
        print(format_table(lines))
        print(f"summary: {summary}")


def append_summary_line(sweep_dir: Path, job: int, overrides: list[str], outcome: dict[str, Any]) -> None:
    line = {"job": job, "overrides": overrides, **outcome}
    summary = sweep_dir / SUMMARY_FILE
    with FileLock(str(summary) + ".lock"), summary.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


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
