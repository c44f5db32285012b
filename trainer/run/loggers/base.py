"""What every tracker shares: fed from the reported events only, so events.jsonl stays the one
canonical record and a tracker shows nothing the event log does not have.

A tracker opens on the first ``run_start`` (a new tracker run) or ``resume`` event (a run
continued in its own directory: the same tracker run, from the step it resumed at); step and
eval events become scalars, samples text, and ``run_end`` closes it with the run's status. A
tracker that fails part way (a tracking server gone) says so in one line and stops; the run
goes on, since everything it would have shown is in events.jsonl.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from trainer.errors import first_line
from trainer.extras import import_extra
from trainer.training.hooks import Hook

if TYPE_CHECKING:
    from trainer.training.loop import Trainer

log = logging.getLogger("lmrunner")

# The scalars of each event, by the name trackers show them under.
STEP_SCALARS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s",
    "tokens_seen": "train/tokens_seen",
    "elapsed_s": "train/elapsed_s",
}
EVAL_SCALARS = {"val_loss": "val/loss"}
# Where trackers that need an identity to continue a run (MLflow's run id) keep it.
TRACKERS_FILE = "trackers.json"


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker needs to open (or reopen) its run."""

    run_dir: Path
    run_id: str
    config: dict[str, Any]
    tags: dict[str, str]  # the run's metadata, flattened to text
    resumed_from: int | None  # a continued run: the step of the checkpoint it resumed from

    @property
    def name(self) -> str:
        return str(self.run_dir)


class TrackerHook(Hook):
    """A tracker as a hook. Subclasses name their package and extra, and implement ``start``,
    ``log_scalars``, ``log_text``, ``flush`` and ``end``."""

    name: ClassVar[str] = "tracker"
    package: ClassVar[str | None] = None  # what must be importable (None: the standard library)
    extra: ClassVar[str | None] = None  # the lmrunner extra that installs it

    def __init__(self) -> None:
        self.opened = False
        self.stopped = False

    @classmethod
    def check_installed(cls) -> None:
        """MissingExtraError (exit 2) naming the extra, while the run is planned."""
        if cls.package is not None:
            import_extra(cls.package, cls.extra, f"loggers: {cls.name}", key="loggers")

    # --- what subclasses implement ------------------------------------------------------

    def start(self, run: TrackedRun) -> None:
        raise NotImplementedError

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def log_text(self, step: int, text: str) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def end(self, status: str) -> None:
        raise NotImplementedError

    # --- the events ---------------------------------------------------------------------

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.stopped:
            return
        try:
            self._handle(trainer, record)
        except Exception as err:  # a tracker is never worth a run: events.jsonl has it all
            self.stopped = True
            log.warning("%s stopped logging: %s (events.jsonl keeps the full record)", self.name, first_line(err))

    def _handle(self, trainer: Trainer, record: dict[str, Any]) -> None:
        event, step = record["event"], record["step"]
        if event in ("run_start", "resume") and not self.opened:
            self.start(tracked_run(trainer, record))
            self.opened = True
        elif not self.opened:
            return
        elif event == "step":
            self.log_scalars(step, scalars_of(record, STEP_SCALARS))
        elif event == "eval":
            self.log_scalars(step, scalars_of(record, EVAL_SCALARS))
        elif event == "sample":
            self.log_text(step, record["text"])
        elif event == "checkpoint":
            self.flush()  # what a later crash would lose is at most the steps since
        elif event == "run_end":
            self.opened = False
            self.end(record["status"])

    def close(self) -> None:
        """The run ended without a run_end event (it failed before reporting one)."""
        if self.opened and not self.stopped:
            self.opened = False
            try:
                self.end("failed")
            except Exception as err:  # the run's own error is on its way out: only a line
                log.warning("%s could not finish: %s", self.name, first_line(err))


def tracked_run(trainer: Trainer, record: dict[str, Any]) -> TrackedRun:
    """The run as the opening event describes it; a ``resume`` event that opens a tracker is
    a run continued in its own directory (a branch into a new one reports run_start first)."""
    resumed_from = record["from_step"] if record["event"] == "resume" else None
    return TrackedRun(
        run_dir=trainer.run.run_dir,
        run_id=trainer.run.run_id,
        config=record.get("config") or trainer.config.to_dict(),
        tags=run_tags(trainer, record),
        resumed_from=resumed_from,
    )


def run_tags(trainer: Trainer, record: dict[str, Any]) -> dict[str, str]:
    model, data = record.get("model") or {}, record.get("data") or {}
    values = {
        "run_id": trainer.run.run_id,
        "run_dir": str(Path(trainer.run.run_dir).resolve()),
        "config_hash": record.get("config_hash"),
        "git_commit": record.get("git_commit"),
        "seed": record.get("seed"),
        "device": record.get("device"),
        "world_size": record.get("world_size"),
        "model": model.get("model_name") or model.get("architecture_type"),
        "model_origin": model.get("origin"),
        "num_parameters": model.get("num_parameters"),
        "fine_tune": record.get("fine_tune"),
        "data_source": data.get("source"),
        "data_sha256": data.get("sha256"),
        "lmrunner_version": (record.get("versions") or {}).get("lmrunner"),
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def scalars_of(record: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    """The event's finite numbers under their tracker names. An infinite gradient norm stays
    in events.jsonl; trackers' charts (and MLflow's store) take finite values only."""
    return {
        shown: record[field]
        for field, shown in names.items()
        if isinstance(record.get(field), (int, float)) and math.isfinite(record[field])
    }


def flat_params(config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The config as hyperparameters: numbers and text as they are, anything else as text."""
    return {
        key: value if isinstance(value, (str, int, float, bool)) else json.dumps(value) for key, value in config.items()
    }


def trackers_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    """What the trackers kept in the run directory to continue their runs on resume."""
    try:
        return json.loads((run_dir / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def remembered(run_dir: Path, tracker: str) -> dict[str, Any]:
    return trackers_of(run_dir).get(tracker, {})


def remember(run_dir: Path, tracker: str, values: dict[str, Any]) -> None:
    path = run_dir / TRACKERS_FILE
    known = trackers_of(run_dir)
    known[tracker] = values
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(known, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
