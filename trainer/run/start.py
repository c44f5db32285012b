"""Start a run from config layers: the part both front doors share after parsing argv.

Composes and validates the config, plans a resume or a branch if one is asked for, looks
the model up in the registry, picks the run directory (the resumed run's own, or a new one
from ``new_run_dir``), records what was asked for under ``.hydra/`` and calls
``run_training``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.checkpoint.write import list_checkpoints
from trainer.config.schema import ConfigLayer, TrainingConfig, compose_config
from trainer.data.windows import check_data_file
from trainer.errors import ConfigError, ConfigValueError, UsageError
from trainer.models.source import check_tokenizer_setting, registry_of, select_model
from trainer.run.execute import RunResult, run_training
from trainer.run.resume_plan import ResumePlan, plan_branch, plan_resume
from trainer.run.rundir import write_composed_config
from trainer.training.distributed import current, on_main


def plan_run(layers: list[ConfigLayer]) -> tuple[TrainingConfig, ResumePlan | None]:
    """The config a run will use (a resume takes the checkpoint's), without starting it."""
    config = compose_config(layers)
    if config.branch is not None:
        if config.resume is None:
            raise ConfigError(
                f"branch={config.branch!r} needs a checkpoint to branch from",
                key="branch",
                hint="add --resume CHECKPOINT (or resume=CHECKPOINT)",
            )
        plan = plan_branch(config.resume, config.branch, layers)
        # Rank 0 checks for all: a rank checking after rank 0 registered would see it taken.
        on_main(lambda: _refuse_taken_name(plan.config))
    elif config.resume is not None:
        plan = plan_resume(config.resume, layers)
    else:
        plan = None
    config = plan.config if plan else config
    if plan is None:
        select_model(config)  # an unknown model or missing files: exit 2 before any directory exists
    check_tokenizer_setting(config)
    check_batch_split(config, current().world_size)
    check_data_file(config.data_path)
    return config, plan


def check_batch_split(config: TrainingConfig, world_size: int) -> None:
    """batch_size is the global batch: every rank takes an equal share, in equal micro-batches.
    Checked while planning, so a run that cannot split its batch leaves no directory behind."""
    if config.batch_size % (world_size * config.grad_accum_steps):
        raise ConfigValueError(
            "batch_size",
            config.batch_size,
            f"must split evenly over {world_size} ranks x grad_accum_steps micro-batches",
            "grad_accum_steps",
            config.grad_accum_steps,
        )


def _refuse_taken_name(config: TrainingConfig) -> None:
    if config.model_name in registry_of(config).entries():
        raise UsageError(
            f"model '{config.model_name}' is already in the registry; a branch needs a new name",
            hint="choose another --branch name (list-models shows the taken ones)",
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
    # Under DDP, rank 0 alone registers, makes the run directory and records the request; the
    # other ranks are told the directory (each deciding its own would split the run in two).
    if plan is not None and plan.branch is not None:
        from registry.hub import register_checkpoint

        on_main(lambda: register_checkpoint(registry_of(config), plan.checkpoint, plan.branch))
        run_dir = on_main(lambda: _new_dir(new_run_dir, config, overrides))
        try:
            return run_training(config, run_dir, branched_from=plan.checkpoint, console=console)
        except BaseException:
            on_main(lambda: _unregister_unused_branch(config, run_dir))
            raise
    if plan is not None and plan.continue_in is not None:
        run_dir = plan.continue_in  # its .hydra/ keeps the original request; the resume event has this one
    else:
        run_dir = on_main(lambda: _new_dir(new_run_dir, config, overrides))
    return run_training(config, run_dir, resume=plan, console=console)


def _unregister_unused_branch(config: TrainingConfig, run_dir: Path) -> None:
    """A branch whose run failed before saving anything (bad data, a tokenizer that does not
    load, ...) is taken out of the registry again, so the same command can be retried.
    Once a checkpoint names it in its lineage, it stays."""
    if list_checkpoints(run_dir / "checkpoints"):
        return
    from registry.manage import delete_model

    delete_model(registry_of(config), config.model_name)


def _new_dir(new_run_dir: Callable[[], Path], config: TrainingConfig, overrides: list[str] | None) -> Path:
    run_dir = new_run_dir()
    if overrides is not None:
        write_composed_config(run_dir, config.to_dict(), overrides)
    return run_dir
