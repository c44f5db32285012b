"""Start a run from config layers: the part both front doors share after parsing argv.

Composes and validates the config, plans a resume if one is asked for, picks the run
directory (the resumed run's own, or a new one from ``new_run_dir``), records what was
asked for under ``.hydra/`` and calls ``run_training``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.config import ConfigLayer, TrainingConfig, compose_config
from trainer.resume import ResumePlan, plan_resume
from trainer.run import RunResult, run_training
from trainer.rundir import write_composed_config


def plan_run(layers: list[ConfigLayer]) -> tuple[TrainingConfig, ResumePlan | None]:
    """The config a run will use (a resume takes the checkpoint's), without starting it."""
    config = compose_config(layers)
    if config.resume is None:
        return config, None
    plan = plan_resume(config.resume, layers)
    return plan.config, plan


def start_run(
    layers: list[ConfigLayer],
    new_run_dir: Callable[[], Path],
    overrides: list[str],
    console: bool = True,
) -> RunResult:
    config, plan = plan_run(layers)
    if plan is not None and plan.continue_in is not None:
        run_dir = plan.continue_in  # its .hydra/ keeps the original request; the resume event has this one
    else:
        run_dir = new_run_dir()
        write_composed_config(run_dir, config.to_dict(), overrides)
    return run_training(config, run_dir, resume=plan, console=console)
