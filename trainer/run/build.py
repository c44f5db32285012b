"""Assemble a Trainer: from a config (a new run) or from a checkpoint (a resumed one).

A new run gets its model from ``new_adapter``: a fresh custom Transformer when model_name is
None, otherwise the registry model behind its adapter. A resumed run loads the model saved
in the checkpoint itself, then the optimizer and RNG state over it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from trainer.checkpoint.verify import verify_checkpoint
from trainer.config.schema import TrainingConfig
from trainer.data.char_tokenizer import CharTokenizer
from trainer.data.prepare import DataSpec, Progress, char_vocabulary, prepare_data
from trainer.data.tokenizers import load_tokenizer
from trainer.data.windows import eval_loader
from trainer.errors import CheckpointError, ConfigError, DataError, LmrunnerError, UsageError, first_line
from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.loading import load_adapter
from trainer.models.lora import LoraSettings, apply_lora, base_reference, is_adapter_dir, load_base, load_lora
from trainer.models.source import ModelSource, registry_of, tokenizer_directory
from trainer.models.transformer import TransformerShape
from trainer.training import distributed
from trainer.training.hooks import Hook
from trainer.training.loop import RunInfo, Trainer
from trainer.training.optimizer import create_optimizer
from trainer.training.parallel import place_model, resolve_strategy, why_not_bit_exact

log = logging.getLogger("lmrunner")


def model_shape(config: TrainingConfig, vocab_size: int) -> TransformerShape:
    return TransformerShape(
        vocab_size=vocab_size,
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_heads=config.n_heads,
        d_ff=config.d_ff,
        max_seq_len=config.max_seq_len,
        dropout=config.dropout,
    )


def new_adapter(config: TrainingConfig, data: DataSpec, source: ModelSource) -> ModelAdapter:
    """The model a new run starts from, with its tokenizer (or the configured override)."""
    torch.manual_seed(config.seed)  # the initial weights, then dropout, follow from the seed
    override_dir = tokenizer_directory(config)
    override = load_tokenizer(override_dir, config.tokenizer) if override_dir else None
    if source.name is None:
        tokenizer = override or CharTokenizer(char_vocabulary(config, data))
        adapter = CustomTransformerAdapter.new(model_shape(config, tokenizer.vocab_size), tokenizer)
        return _with_memory_settings(adapter, config)
    registry = registry_of(config)
    try:
        if is_adapter_dir(source.directory) and config.lora_r is None:
            adapter = load_lora(source.directory, registry, config.dropout, trainable=True)  # train it on
        else:
            adapter = load_base(registry, source.name, config.dropout, override)  # an adapter model comes merged
    except LmrunnerError:  # already one line that says what to do (e.g. custom code refused)
        raise
    except Exception as err:  # transformers and safetensors raise their own types for a bad file
        raise UsageError(
            f"model '{source.name}' in {source.directory} could not be loaded: {str(err).splitlines()[0]}",
            hint="run: python main.py validate-registry, or import the model again with --force",
        ) from err
    if override is not None:
        _check_override_fits(adapter, config.tokenizer)
    if config.lora_r is not None:  # new adapters on these weights; they alone train
        adapter = apply_lora(adapter, LoraSettings.of(config), base_reference(registry, source.name))
    return _with_memory_settings(adapter, config)


def _with_memory_settings(adapter: ModelAdapter, config: TrainingConfig) -> ModelAdapter:
    if config.gradient_checkpointing:
        adapter.enable_gradient_checkpointing()
    return adapter


def new_trainer(
    config: TrainingConfig,
    data: DataSpec,
    run: RunInfo,
    device: torch.device,
    *,
    adapter: ModelAdapter,
    autocast_dtype: torch.dtype | None = None,
    hooks: list[Hook] | None = None,
    progress: Progress | None = None,
) -> Trainer:
    if config.sampling_cadence:
        _check_prompt(config.sampling_prompt, adapter.tokenizer)
    # A window never exceeds the positions the model has (an imported model may have fewer).
    seq_len = min(config.max_seq_len, adapter.max_positions)
    prepared = prepare_data(config, data, adapter.tokenizer, seq_len, progress)
    run.data.update(prepared.info)  # recorded in run_start and every checkpoint
    # Placed (and under FSDP sharded) before the optimizer is made: it holds the parameters.
    strategy = resolve_strategy(config.strategy, distributed.current())
    autocast_dtype = place_model(adapter, strategy, device, config, autocast_dtype)
    return Trainer(
        adapter,
        create_optimizer(adapter, config, device),
        config,
        eval_loader(prepared.val, config.batch_size, config.eval_batches),
        train_dataset=prepared.train,
        run=run,
        device=device,
        autocast_dtype=autocast_dtype,
        hooks=hooks or [],
        strategy=strategy,
    )


def restore_trainer(
    path: Path,
    *,
    config: TrainingConfig,
    data: DataSpec,
    run: RunInfo,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    hooks: list[Hook] | None = None,
    progress: Progress | None = None,
) -> Trainer:
    """A trainer in exactly the state saved at ``path`` (verified against its manifest)."""
    state = verify_checkpoint(path)
    if state.get("data_sha256") != data.sha256:
        raise DataError(
            f"differs from the data checkpoint {path} was trained on ({state.get('data_source')})",
            path=data.label,
            hint="resume with the same data (--data) or start a new run",
        )
    architecture = (state.get("lineage") or {}).get("architecture_type", CUSTOM_ARCHITECTURE)
    try:
        if is_adapter_dir(path):  # a LoRA run's checkpoint: the adapter, on its base from the registry
            adapter = load_lora(path, registry_of(config), config.dropout, trainable=True)
        else:
            adapter = load_adapter(path, architecture, config.dropout)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # transformers' errors run to several lines
        raise CheckpointError(f"the model or tokenizer in it is unusable ({first_line(err)})", str(path)) from err
    adapter = _with_memory_settings(adapter, config)
    trainer = new_trainer(
        config, data, run, device, adapter=adapter, autocast_dtype=autocast_dtype, hooks=hooks, progress=progress
    )
    trainer.load_state_files(path)  # a file that does not fit is a CheckpointError naming it
    not_exact = why_not_bit_exact(state.get("parallel"), trainer.strategy, trainer.ranks.world_size, config.dropout)
    if not_exact and trainer.ranks.is_main:
        log.warning(not_exact)
    trainer.step = state["step"]
    trainer.last_checkpoint_step, trainer.last_checkpoint = state["step"], path
    trainer.last_loss, trainer.last_val_loss = state.get("last_loss"), state.get("last_val_loss")
    trainer.elapsed_before = state.get("elapsed_s", 0.0)  # absent from checkpoints of older versions
    return trainer


def _check_prompt(prompt: str, tokenizer) -> None:
    if not isinstance(tokenizer, CharTokenizer):
        return  # a subword tokenizer encodes any text
    missing = tokenizer.unknown_chars(prompt)
    if missing:
        raise ConfigError(
            f"sampling_prompt={prompt!r} has characters the vocabulary lacks: {''.join(missing)!r}",
            key="sampling_prompt",
            hint="use a prompt made of characters that occur in the training text",
        )


def _check_override_fits(adapter: ModelAdapter, setting: str) -> None:
    rows = adapter.describe()["vocab_size"]
    if adapter.tokenizer.vocab_size > rows:
        raise ConfigError(
            f"tokenizer={setting!r} has {adapter.tokenizer.vocab_size} tokens but the model embeds only {rows}",
            key="tokenizer",
            hint="use the model's own tokenizer (tokenizer: null) or one of the same vocabulary",
        )
    log.warning(
        "tokenizer override %s (%s) replaces the model's own: ids that mean other text than in "
        "pre-training make its knowledge useless for them",
        setting,
        adapter.tokenizer.identifier,
    )
