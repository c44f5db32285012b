"""run_training(config, run_dir): wires the pieces together; called by both front doors.

Resolves what a config leaves open (the seed, the schedule length, the device), loads the
data, builds or restores the Trainer, logs the run's metadata, trains, and closes the
event log with ``run_end`` whatever happened.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.build import new_trainer, restore_trainer
from trainer.config import TrainingConfig
from trainer.data import load_corpus
from trainer.device import configure_precision, resolve_device
from trainer.errors import NonFiniteLossError, TrainingInterrupted
from trainer.events import EventLog, git_commit, new_run_id
from trainer.hooks import default_hooks
from trainer.loop import RunInfo, Trainer
from trainer.resume import ResumePlan
from trainer.rundir import write_resolved_config

log = logging.getLogger("lmrunner")

ARCHITECTURE_TYPE = "custom-transformer"


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


def resolve_config(config: TrainingConfig) -> tuple[TrainingConfig, str]:
    """Fill in what a config may leave open: draw a seed, fix the schedule length."""
    seed_source = "config"
    if config.seed is None:
        config = dataclasses.replace(config, seed=secrets.randbelow(2**31))
        seed_source = "drawn"
    if config.lr_decay_steps is None:
        config = dataclasses.replace(config, lr_decay_steps=config.max_steps)
    return config, seed_source


def run_training(
    config: TrainingConfig,
    run_dir: Path,
    *,
    resume: ResumePlan | None = None,
    console: bool = True,
) -> RunResult:
    started = time.monotonic()
    config, seed_source = resolve_config(config)
    device = resolve_device(config.device)
    precision = configure_precision(config.precision, config.fast_matmul, device)
    corpus = load_corpus(config.data_path)
    continuing = resume is not None and resume.continue_in == run_dir
    run_id = resume.state["run_id"] if continuing else new_run_id()
    write_resolved_config(run_dir, config.to_dict())

    file_log = _attach_file_log(run_dir / "train.log")
    events = EventLog(run_dir / "events.jsonl", run_id)
    run = RunInfo(run_dir, run_id, corpus.source, corpus.sha256, lineage=_lineage())
    start_step = resume.state["step"] if resume else 0
    hooks = default_hooks(config, events, start_step, console=console)
    trainer: Trainer | None = None
    status = "failed"
    try:
        common = dict(
            config=config, corpus=corpus, run=run, device=device, autocast_dtype=precision.autocast_dtype, hooks=hooks
        )
        trainer = restore_trainer(resume.checkpoint, **common) if resume else new_trainer(**common)
        metadata = _run_metadata(trainer, config, seed_source, precision.matmul, precision.note, hooks, corpus)
        if not continuing:
            trainer.report("run_start", **metadata, resumed_from=str(resume.checkpoint) if resume else None)
        if resume:
            trainer.report(
                "resume",
                **metadata,
                **{"from": str(resume.checkpoint)},
                from_step=resume.state["step"],
                mode="continuing this run" if continuing else "new branch in a new run directory",
            )
        _log_start(run, metadata, resume, continuing)
        trainer.fit()
        status = "completed"
    except (TrainingInterrupted, KeyboardInterrupt):  # KeyboardInterrupt: a second Ctrl-C, mid-save
        status = "interrupted"
        raise
    except NonFiniteLossError as err:
        if trainer:
            trainer.report("error", kind="non_finite_loss", message=str(err), failed_step=err.step)
        raise
    except Exception as err:
        if trainer:
            trainer.report("error", kind=type(err).__name__, message=str(err))
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
        if trainer:
            trainer.report(
                "run_end",
                status=status,
                final_loss=result.final_loss,
                final_val_loss=result.final_val_loss,
                checkpoint=_str(result.checkpoint),
                wall_time_s=result.wall_time_s,
            )
        for hook in hooks:
            hook.close()
        events.close()
        log.removeHandler(file_log)
        file_log.close()
    return result


def _lineage() -> dict[str, Any]:
    return {
        "architecture_type": ARCHITECTURE_TYPE,
        "fine_tuned_from": None,
        "chain": [],
        "origin": "trained from scratch",
    }


def _run_metadata(trainer, config, seed_source, matmul, precision_note, hooks, corpus) -> dict[str, Any]:
    shape = trainer.model.shape
    return {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "git_commit": git_commit(),
        "seed": config.seed,
        "seed_source": seed_source,
        "hooks": [hook.describe() for hook in hooks],
        "model": {
            "architecture_type": ARCHITECTURE_TYPE,
            "origin": "trained from scratch",
            "num_parameters": trainer.model.num_parameters(),
            **dataclasses.asdict(shape),
        },
        "lineage": trainer.run.lineage,
        "tokenizer": trainer.tokenizer.identifier,
        "data": {
            "source": corpus.source,
            "sha256": corpus.sha256,
            "characters": len(corpus.text),
            "train_windows": len(trainer.train_dataset),
            "val_windows": len(trainer.val_dataloader.dataset),
        },
        "device": str(trainer.device),
        "precision": {"setting": config.precision, "matmul": matmul, "note": precision_note},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def _log_start(run: RunInfo, meta: dict[str, Any], resume: ResumePlan | None, continuing: bool) -> None:
    model, data = meta["model"], meta["data"]
    log.info("run %s (config %s) in %s", run.run_id, meta["config_hash"], run.run_dir)
    if resume:
        how = "continuing the run" if continuing else "as a new branch"
        log.info("resumed from %s at step %d, %s", resume.checkpoint, resume.state["step"], how)
    log.info(
        "model: %s, %d layers, d_model %d, %d heads, d_ff %d, %s parameters, %s",
        model["architecture_type"],
        model["n_layers"],
        model["d_model"],
        model["n_heads"],
        model["d_ff"],
        f"{model['num_parameters']:,}",
        model["origin"],
    )
    log.info("data: %s (%s characters, vocabulary %d)", data["source"], f"{data['characters']:,}", model["vocab_size"])
    log.info(
        "device: %s, %s (%s); seed %d (%s)",
        meta["device"],
        meta["precision"]["matmul"],
        meta["precision"]["note"],
        meta["seed"],
        meta["seed_source"],
    )
    log.info("hooks: %s", ", ".join(meta["hooks"]))


def _attach_file_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
