"""Start a run from config layers: the part both front doors share after parsing argv.

Composes and validates the config, plans a resume if one is asked for, picks the run
directory (the resumed run's own, or a new one from ``new_run_dir``), records what was
asked for under ``.hydra/`` and calls ``run_training``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.config import ConfigLayer, TrainingConfig, compose_config
from trainer.data import check_data_file
from trainer.errors import ConfigError
from trainer.resume import ResumePlan, plan_resume
from trainer.run import RunResult, run_training
from trainer.rundir import write_composed_config


def plan_run(layers: list[ConfigLayer]) -> tuple[TrainingConfig, ResumePlan | None]:
    """The config a run will use (a resume takes the checkpoint's), without starting it."""
    config = compose_config(layers)
    plan = plan_resume(config.resume, layers) if config.resume is not None else None
    config = plan.config if plan else config
    check_model_selection(config)
    check_data_file(config.data_path)
    return config, plan


def check_model_selection(config: TrainingConfig) -> None:
    """Only the custom Transformer trains in this version: a model_name is looked up (an
    unknown one lists what the registry holds) and then refused with what to do, rather
    than silently training something other than what was asked for."""
    if config.model_name is not None:
        from registry.store import Registry

        entry = Registry(Path(config.registry_dir) if config.registry_dir else None).get(config.model_name)
        raise ConfigError(
            f"model_name={config.model_name!r} is a registered {entry.architecture_type} model, but training "
            "imported models is not available in this version",
            key="model_name",
            hint="set model_name to null to train the custom Transformer from scratch",
        )
    if config.tokenizer is not None:
        raise ConfigError(
            f"tokenizer={config.tokenizer!r}: the custom Transformer uses the character vocabulary of its data",
            key="tokenizer",
            hint="set tokenizer to null",
        )


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
        run_dir = plan.continue_in  # its .hydra/ keeps the original request; the resume event has this one
    else:
        run_dir = new_run_dir()
        if overrides is not None:
            write_composed_config(run_dir, config.to_dict(), overrides)
    return run_training(config, run_dir, resume=plan, console=console)
