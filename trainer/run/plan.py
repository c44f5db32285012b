"""Planning a run: the config it will use, checked whole before anything is written.

``plan_run`` composes the layers, plans a resume or a branch, and runs every cheap check
(the model in the registry, the tokenizer setting, the trackers' packages, the batch split
over ranks, the data file)
so that a run that cannot start fails before a run directory exists. ``resolve_config`` fills
in what a config may leave open when the run starts: the seed and the schedule length.
``stop_early_layer`` is what --max-steps means: stop at step N, keep the planned schedule.
A run whose memory floor exceeds the machine's is refused here too (trainer/run/memory.py).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

from trainer.config.compose import ConfigLayer, compose_config
from trainer.config.schema import TrainingConfig
from trainer.data.prepare import check_data_source
from trainer.data.windows import check_window_fits, split_sizes
from trainer.errors import ConfigError, ConfigValueError, UsageError
from trainer.extras import import_extra
from trainer.models.lora import check_targets, is_adapter_dir, weights_directory
from trainer.models.source import check_tokenizer_setting, registry_of, select_model
from trainer.run.loggers import check_loggers
from trainer.run.memory import Architecture, check_fits, custom_architecture, device_memory, hf_architecture
from trainer.run.resume_plan import ResumePlan, plan_branch, plan_resume
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
    # An unknown model or missing files: exit 2 before any directory exists. A resumed or
    # branched run's model is its checkpoint.
    model_dir = plan.checkpoint if plan else select_model(config).directory
    check_tokenizer_setting(config)
    check_loggers(config.loggers)  # a tracker whose package is missing: exit 2 naming the extra
    lora = config.lora_r is not None or (model_dir is not None and is_adapter_dir(model_dir))
    if lora:
        import_extra("peft", "lora", "LoRA", key="lora_r")
        model_dir = weights_directory(registry_of(config), model_dir)  # an adapter's size is its base's
        if config.lora_r is not None and plan is None:
            check_targets(model_dir, config.lora_target_modules)
    check_batch_split(config, current().world_size)
    check_data(config)
    arch = _architecture(config, model_dir)
    check_fits(config, arch, current().world_size, device_memory(config.device), lora)
    return config, plan


def _architecture(config: TrainingConfig, model_dir: Path | None) -> Architecture:
    """The shape the memory check counts: a Hugging Face model's config.json, a saved custom
    model's own shape, or the config's. A character vocabulary is small; 256 stands for it."""
    if model_dir is not None:
        hf = hf_architecture(model_dir, None)
        if hf is not None:
            return hf
        saved = model_dir / "model_config.json"
        if saved.is_file():
            shape = json.loads(saved.read_text(encoding="utf-8"))
            config = dataclasses.replace(config, **{k: shape[k] for k in _SHAPE_KEYS if k in shape})
    return custom_architecture(config, vocab_size=256)


_SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "d_ff", "max_seq_len")


def check_data(config: TrainingConfig) -> None:
    """The data paths name data (and a table has the datasets package to read it); text is
    read through once, and with the character tokenizer (one token per character) the
    windows can be checked too. Tables and subword token counts are read in the run."""
    (train, characters), *val = check_data_source(config)
    if train.is_text and not val and config.model_name is None and config.tokenizer is None:
        train_chars, val_chars = split_sizes(characters, config.train_ratio)
        check_window_fits(train_chars, val_chars, config.max_seq_len, train.label)


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


def resolve_config(config: TrainingConfig) -> tuple[TrainingConfig, str]:
    """Fill in what a config may leave open: draw a seed, fix the schedule length."""
    seed_source = "config"
    if config.seed is None:  # under DDP rank 0 draws it for all
        config = dataclasses.replace(config, seed=on_main(lambda: secrets.randbelow(2**31)))
        seed_source = "drawn"
    if config.lr_decay_steps is None:
        config = dataclasses.replace(config, lr_decay_steps=config.max_steps)
    return config, seed_source


def stop_early_layer(layers: list[ConfigLayer], max_steps: int) -> ConfigLayer:
    """--max-steps N: stop after step N without changing the learning-rate schedule.

    A new run whose config leaves ``lr_decay_steps`` open has it pinned to the config's own
    ``max_steps``, so a run done in parts (--max-steps 20, then --resume --max-steps 40) gets
    the rates, and the losses, of one 40-step run. A resumed run keeps its checkpoint's.
    """
    values: dict[str, int] = {"max_steps": max_steps}
    planned = compose_config(layers)
    if planned.lr_decay_steps is None and planned.resume is None:
        values["lr_decay_steps"] = planned.max_steps
    return ConfigLayer("--max-steps", values)
