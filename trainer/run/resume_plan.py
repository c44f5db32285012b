"""Planning a resume: which checkpoint, which config, which run directory.

The checkpoint's config is the base. What the user passes may change only the keys in
RESUMABLE_KEYS (how far the run goes and what it reports); any other key that differs from
the checkpoint is refused, because it would silently change the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.checkpoint.find import Damaged, newest_valid, resolve_resume_path
from trainer.checkpoint.verify import verify_checkpoint
from trainer.config.compose import ConfigLayer, compose_config, merge_layers
from trainer.config.schema import RESUMABLE_KEYS, TrainingConfig
from trainer.errors import ConfigError
from trainer.run.rundir import run_dir_of

# A null here means "resolve at start"; on resume the checkpoint's resolved value stands.
_RESOLVED_AT_START = frozenset({"seed", "lr_decay_steps"})


@dataclass(frozen=True)
class ResumePlan:
    checkpoint: Path
    state: dict[str, Any]
    config: TrainingConfig
    continue_in: Path | None  # the run directory to continue, or None for a new one
    branch: str | None = None  # a new fine-tune of the checkpoint, registered under this name
    # Continuing: the run's checkpoints newer than this one, which do not verify. They are set
    # aside before the run goes on, or it would write over them as it reaches their steps.
    damaged: tuple[Damaged, ...] = ()


def plan_resume(resume: str, user_layers: list[ConfigLayer]) -> ResumePlan:
    checkpoint = resolve_resume_path(Path(resume))
    state = verify_checkpoint(checkpoint, hash_files=False)  # hashes are checked at load
    saved = state["config"]
    layers = [ConfigLayer(f"checkpoint {checkpoint}", saved)]
    for layer in user_layers:
        kept = {}
        for key, value in layer.values.items():
            if key in _RESOLVED_AT_START and value is None:
                continue
            if key in saved and key not in RESUMABLE_KEYS and _typed(key, value, layer) != saved[key]:
                raise ConfigError(
                    f"cannot change {key} when resuming: the checkpoint has {saved[key]!r}, this run asks for {value!r}",
                    key=key,
                    source=layer.where(key),
                    hint=f"drop the change to continue the run exactly, or branch from the checkpoint with the "
                    f"change: --resume {checkpoint} --branch NEW_NAME {key}=...",
                )
            _check_validation_source(key, saved.get(key), value, layer)
            kept[key] = value
        layers.append(ConfigLayer(layer.source, kept, layer.lines))
    config = compose_config(layers)
    if state["step"] >= config.max_steps:
        raise ConfigError(
            f"nothing to resume: the run reached step {state['step']} and its max_steps is {config.max_steps}",
            key="max_steps",
            hint=f"to train further, give a larger total: --resume {resume} --max-steps N (or max_steps=N), "
            f"N > {state['step']}",
        )
    continue_in, damaged = _continuable_run_dir(checkpoint)
    return ResumePlan(checkpoint, state, config, continue_in, damaged=damaged)


def _typed(key: str, value: Any, layer: ConfigLayer) -> Any:
    """``value`` as the schema's type for ``key`` ("1e-3" from a command line is 0.001), so a
    resume compares numbers with numbers, not text with numbers."""
    return merge_layers([ConfigLayer(layer.source, {key: value}, layer.lines)])[key]


def _check_validation_source(key: str, saved: Any, value: Any, layer: ConfigLayer) -> None:
    """val_data_path may move to another file, but not come or go: without it, validation is
    cut from the training data, so adding or dropping it would change what training reads."""
    if key == "val_data_path" and (saved is None) != (value is None):
        raise ConfigError(
            f"cannot {'add' if saved is None else 'drop'} val_data_path when resuming: without it the "
            "validation examples are cut from the training data, so the training examples would change",
            key=key,
            source=layer.where(key),
            hint="keep the run's validation data as it was, or start a new run (or --branch) with it",
        )


def _continuable_run_dir(checkpoint: Path) -> tuple[Path | None, tuple[Damaged, ...]]:
    """Continue in the checkpoint's own run directory when it is that run's latest valid
    checkpoint (with the damaged ones newer than it); resuming from an older one starts a
    branch in a new directory, so the original run's later checkpoints and events stay as they were."""
    run_dir = run_dir_of(checkpoint)
    if run_dir is None:
        return None, ()
    latest, damaged = newest_valid(checkpoint.parent)
    if latest is not None and latest.resolve() == checkpoint.resolve():
        return run_dir, tuple(damaged)
    return None, ()


def plan_branch(resume: str, branch: str, user_layers: list[ConfigLayer]) -> ResumePlan:
    """A new fine-tune starting from a checkpoint's weights: the checkpoint's config is the
    base, every key may change, and the model is the checkpoint registered as ``branch``.
    It starts at step 0 with a fresh optimizer and plans its own schedule length."""
    from registry.store import validate_name

    validate_name(branch)
    checkpoint = resolve_resume_path(Path(resume))
    state = verify_checkpoint(checkpoint, hash_files=False)
    saved = {**state["config"], "lr_decay_steps": None}
    layers = [ConfigLayer(f"checkpoint {checkpoint}", saved)]
    for layer in user_layers:
        kept = {k: v for k, v in layer.values.items() if not (k in _RESOLVED_AT_START and v is None)}
        layers.append(ConfigLayer(layer.source, kept, layer.lines))
    layers.append(ConfigLayer("--branch", {"model_name": branch, "resume": None, "branch": None}))
    return ResumePlan(checkpoint, state, compose_config(layers), continue_in=None, branch=branch)
