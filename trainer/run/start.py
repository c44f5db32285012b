"""Start a run from config layers: the part both front doors share after parsing argv.

Plans the run (trainer/run/plan.py), registers a branch if one is asked for, picks the run
directory (the resumed run's own, or a new one from ``new_run_dir``), records what was asked
for under ``.hydra/`` and calls ``run_training``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from trainer.config.compose import ConfigLayer
from trainer.config.schema import TrainingConfig
from trainer.models.source import registry_of
from trainer.run.execute import RunResult, run_training
from trainer.run.plan import plan_run
from trainer.run.rundir import refuse_used_run_dir, trained_anything, write_composed_config
from trainer.training.distributed import current, on_main


def start_run(
    layers: list[ConfigLayer],
    new_run_dir: Callable[[], Path],
    overrides: list[str] | None,
    console: bool = True,
) -> RunResult:
    """Plan and run. ``overrides`` is the request to record under .hydra/; None when Hydra
    has recorded it already."""
    config, plan = plan_run(layers)
    if plan is not None and plan.continue_in is not None:
        # Its .hydra/ keeps the original request; the resume event records this one.
        return run_training(config, plan.continue_in, resume=plan, console=console)
    branch = plan is not None and plan.branch is not None
    # Under DDP, rank 0 alone registers, makes the run directory and records the request; the
    # other ranks are told the directory (each deciding its own would split the run in two).
    if branch:
        from trainer.models.register import register_checkpoint

        on_main(lambda: register_checkpoint(registry_of(config), plan.checkpoint, plan.branch))
    run_dir = on_main(lambda: _new_dir(new_run_dir, config, overrides))
    try:
        if branch:
            return run_training(config, run_dir, branched_from=plan.checkpoint, console=console)
        return run_training(config, run_dir, resume=plan, console=console)
    except BaseException:
        if current().is_main:  # no collective here: the other ranks may be failing too
            _discard_if_unused(config, run_dir, branch)
        raise


def _discard_if_unused(config: TrainingConfig, run_dir: Path, branch: bool) -> None:
    """A run that failed before its first step (the text too short for the model's tokenizer,
    a model that does not load, Ctrl-C while loading) leaves nothing behind: its new run
    directory is removed, and a branch it registered is taken out of the registry again, so
    the same command can be retried. Once a step has run, the directory is the record of it."""
    if trained_anything(run_dir):
        return
    if branch:
        from registry.manage import delete_model

        delete_model(registry_of(config), config.model_name)
    shutil.rmtree(run_dir, ignore_errors=True)
    day = run_dir.parent
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", day.name):  # outputs/DATE/ and outputs/ that it left empty
        with contextlib.suppress(OSError):  # not empty: other runs are there
            day.rmdir()
            day.parent.rmdir()


def _new_dir(new_run_dir: Callable[[], Path], config: TrainingConfig, overrides: list[str] | None) -> Path:
    run_dir = new_run_dir()
    refuse_used_run_dir(run_dir)
    if overrides is not None:
        write_composed_config(run_dir, config.to_dict(), overrides)
    return run_dir
