"""Start a run from config layers: the part both front doors share after parsing argv.

Plans the run (trainer/run/plan.py), registers a branch if one is asked for, picks the run
directory (the resumed run's own, or a new one from ``new_run_dir``), records what was asked
for under ``.hydra/`` and calls ``run_training``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.checkpoint.find import list_checkpoints
from trainer.config.compose import ConfigLayer
from trainer.config.schema import TrainingConfig
from trainer.models.source import registry_of
from trainer.run.execute import RunResult, run_training
from trainer.run.plan import plan_run
from trainer.run.rundir import write_composed_config
from trainer.training.distributed import on_main


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
        from trainer.models.register import register_checkpoint

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
