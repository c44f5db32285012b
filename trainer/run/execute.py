"""run_training(config, run_dir): wires the pieces together; called by both front doors.

Resolves what a config leaves open (the seed, the schedule length, the device), loads the
data, builds or restores the Trainer, logs the run's metadata, trains, and closes the
event log with ``run_end`` whatever happened.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.config.schema import TrainingConfig
from trainer.data.prepare import open_data
from trainer.errors import DiskWriteError, LmrunnerError, NonFiniteLossError, NonFiniteStateError, TrainingInterrupted
from trainer.models.source import ModelSource, lineage_for, select_model
from trainer.run.build import new_adapter, new_trainer, restore_trainer
from trainer.run.console import tokenizing_progress
from trainer.run.events import EventLog, new_run_id
from trainer.run.hooks import default_hooks
from trainer.run.metadata import fine_tune_mode, log_start, run_metadata
from trainer.run.plan import resolve_config
from trainer.run.reopen import Reopened, reopen_for_writing
from trainer.run.resume_plan import ResumePlan
from trainer.run.rundir import write_resolved_config
from trainer.training import distributed
from trainer.training.device import configure_precision, resolve_device
from trainer.training.host_memory import reuse_freed_memory
from trainer.training.loop import RunInfo, Trainer

log = logging.getLogger("lmrunner")


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    status: str
    steps: int
    final_loss: float | None
    final_val_loss: float | None
    checkpoint: Path | None
    wall_time_s: float


def run_training(
    config: TrainingConfig,
    run_dir: Path,
    *,
    resume: ResumePlan | None = None,
    branched_from: Path | None = None,
    console: bool = True,
) -> RunResult:
    """Train ``config`` in ``run_dir``: a new run, a resumed one (``resume``), or a new
    fine-tune branch of a checkpoint already registered as ``config.model_name``."""
    started = time.monotonic()
    ranks = distributed.current()
    config, seed_source = resolve_config(config)
    source = None if resume else select_model(config)  # before anything heavy loads
    device = resolve_device(distributed.device_for(config.device, ranks))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precision = configure_precision(config.precision, config.fast_matmul, device)
    data = open_data(config)  # reads the data's files once, for their sha256
    continuing = resume is not None and resume.continue_in == run_dir
    run_id = resume.state["run_id"] if continuing else distributed.on_main(new_run_id)

    # Rank 0 alone writes the run's files and talks to the console; the other ranks train.
    if ranks.is_main:
        write_resolved_config(run_dir, config.to_dict())
    file_log = _attach_file_log(run_dir / "train.log") if ranks.is_main else logging.NullHandler()
    events = EventLog(run_dir / "events.jsonl", run_id) if ranks.is_main else None
    reopened = reopen_for_writing(run_dir, events, resume.damaged) if continuing and events else Reopened()
    if resume:
        lineage = resume.state.get("lineage") or lineage_for(ModelSource())  # kept as the checkpoint has it
    else:
        lineage = lineage_for(source)
        if branched_from is not None:
            lineage["branched_from"] = str(branched_from)
    run = RunInfo(run_dir, run_id, data.label, data.sha256, lineage=lineage)
    start_step = resume.state["step"] if resume else 0
    hooks = default_hooks(config, events, start_step, console=console and ranks.is_main)
    host_memory, give_back_memory = reuse_freed_memory(config.reuse_cpu_memory and device.type == "cpu")
    trainer: Trainer | None = None
    status, closing = "failed", None  # closing: the line train.log ends with when the run did not complete
    try:
        common = dict(
            config=config,
            data=data,
            run=run,
            device=device,
            autocast_dtype=precision.autocast_dtype,
            hooks=hooks,
            progress=tokenizing_progress(console and ranks.is_main),
        )
        if resume:
            trainer = restore_trainer(resume.checkpoint, **common)
        else:
            trainer = new_trainer(**common, adapter=new_adapter(config, data, source))
        metadata = run_metadata(
            trainer,
            seed_source=seed_source,
            precision=precision,
            host_memory=host_memory,
            hooks=hooks,
            source=source,
            fine_tune=fine_tune_mode(lineage, resumed=resume is not None, continuing=continuing),
        )
        _announce_start(trainer, run, metadata, resume, continuing, reopened)
        trainer.fit()
        status = "completed"
    except (TrainingInterrupted, KeyboardInterrupt) as err:  # KeyboardInterrupt: a second Ctrl-C, mid-save
        status, closing = "interrupted", _error_line(err)
        raise
    except Exception as err:
        closing = _error_line(err)
        if trainer:
            _report_quietly(trainer, "error", **_error_fields(err))
        raise
    finally:
        result = RunResult(
            run_dir=run_dir,
            run_id=run_id,
            status=status,
            steps=trainer.step if trainer else start_step,
            final_loss=trainer.last_loss if trainer else None,
            final_val_loss=trainer.last_val_loss if trainer else None,
            checkpoint=trainer.last_checkpoint if trainer else None,
            wall_time_s=round(time.monotonic() - started, 3),
        )
        _close_run(trainer, result, closing, hooks, events, file_log)
        give_back_memory()
    return result


def _announce_start(
    trainer: Trainer,
    run: RunInfo,
    metadata: dict[str, Any],
    resume: ResumePlan | None,
    continuing: bool,
    reopened: Reopened,
) -> None:
    """run_start for a new run (or branch), resume for a resumed one, and the console's lines."""
    if not continuing:
        trainer.report("run_start", **metadata, resumed_from=str(resume.checkpoint) if resume else None)
    if resume:
        trainer.report(
            "resume",
            **metadata,
            **{"from": str(resume.checkpoint)},
            from_step=resume.state["step"],
            mode="continuing this run" if continuing else "new branch in a new run directory",
            **asdict(reopened),
        )
    if distributed.current().is_main:
        log_start(run, metadata, resume, continuing)


def _close_run(trainer, result: RunResult, closing: str | None, hooks, events, file_log: logging.Handler) -> None:
    """run_end, the hooks and logs closed, and the closing lines, whatever way the run ended."""
    if trainer:
        # After a failure, recording it must not replace it (a full disk fails both).
        report = trainer.report if result.status == "completed" else functools.partial(_report_quietly, trainer)
        report(
            "run_end",
            status=result.status,
            final_loss=result.final_loss,
            final_val_loss=result.final_val_loss,
            checkpoint=_str(result.checkpoint),
            wall_time_s=result.wall_time_s,
        )
    for hook in hooks:
        hook.close()
    if events is not None:
        events.close()
    _closing_lines(result, closing, file_log)
    log.removeHandler(file_log)
    file_log.close()


def _closing_lines(result: RunResult, closing: str | None, file_log: logging.Handler) -> None:
    """The same last line from both front doors: "done: ..." on the console and in train.log;
    for a run that did not complete, its error line in train.log (the CLI prints it on the
    console once, as every error)."""
    if result.status == "completed":
        loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
        log.info("done: %d steps, final loss %s, run directory %s", result.steps, loss, result.run_dir)
    elif closing is not None:
        file_log.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (closing,), None))


def _error_line(err: BaseException) -> str:
    if isinstance(err, LmrunnerError):
        return err.line()
    if isinstance(err, KeyboardInterrupt):
        return "interrupted; stopped at once"
    return f"{type(err).__name__}: {err}"


def _error_fields(err: Exception) -> dict[str, Any]:
    if isinstance(err, (NonFiniteLossError, NonFiniteStateError)):
        kind = "non_finite_loss" if isinstance(err, NonFiniteLossError) else "non_finite_state"
        return {"kind": kind, "message": str(err), "failed_step": err.step}
    return {"kind": type(err).__name__, "message": str(err)}


def _report_quietly(trainer: Trainer, event: str, **fields: Any) -> None:
    """Report while another error is on its way out: if events.jsonl cannot be written
    either, the first error is the one the user needs to see."""
    with contextlib.suppress(DiskWriteError):
        trainer.report(event, **fields)


class _FileLog(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk: the console has the same lines, and a "--- Logging error ---" traceback
        # for each of them would bury the one error line that says what happened.
        pass


def _attach_file_log(path: Path) -> logging.Handler:
    handler = _FileLog(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
