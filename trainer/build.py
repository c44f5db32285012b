"""Assemble a Trainer: from a config (a new run) or from a checkpoint (a resumed one).

The two paths share ``new_trainer``; restoring only swaps in the checkpoint's tokenizer and
then loads the saved state over the freshly built pieces.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer import checkpoint as ckpt
from trainer.config import TrainingConfig
from trainer.data import Corpus, eval_loader, prepare_data
from trainer.errors import CheckpointError, ConfigError, DataError
from trainer.hooks import Hook
from trainer.loop import TOKENIZER_FILE, RunInfo, Trainer
from trainer.model import Transformer, TransformerShape
from trainer.optim import create_optimizer
from trainer.tokenizer import CharTokenizer


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


def new_trainer(
    config: TrainingConfig,
    corpus: Corpus,
    run: RunInfo,
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    hooks: list[Hook] | None = None,
    tokenizer: CharTokenizer | None = None,
) -> Trainer:
    tokenizer = tokenizer or CharTokenizer.from_text(corpus.text)
    if config.sampling_cadence:
        _check_prompt(config.sampling_prompt, tokenizer)
    data = prepare_data(corpus, tokenizer, config.max_seq_len, config.train_ratio)
    torch.manual_seed(config.seed)  # the initial weights, then dropout, follow from the seed
    model = Transformer(model_shape(config, tokenizer.vocab_size)).to(device)
    return Trainer(
        model,
        create_optimizer(model, config),
        config,
        eval_loader(data.val, config.batch_size, config.eval_batches),
        tokenizer,
        train_dataset=data.train,
        run=run,
        device=device,
        autocast_dtype=autocast_dtype,
        hooks=hooks or [],
    )


def restore_trainer(
    path: Path,
    *,
    config: TrainingConfig,
    corpus: Corpus,
    run: RunInfo,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    hooks: list[Hook] | None = None,
) -> Trainer:
    """A trainer in exactly the state saved at ``path`` (verified against its manifest)."""
    state = ckpt.verify_checkpoint(path)
    if state.get("data_sha256") != corpus.sha256:
        raise DataError(
            f"differs from the text checkpoint {path} was trained on ({state.get('data_source')})",
            path=corpus.source,
            hint="resume with the same data (--data) or start a new run",
        )
    try:
        tokenizer = CharTokenizer.load(path / TOKENIZER_FILE)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"tokenizer.json is unusable ({err})", str(path)) from err
    trainer = new_trainer(config, corpus, run, device, autocast_dtype=autocast_dtype, hooks=hooks, tokenizer=tokenizer)
    try:
        trainer.load_state_files(path)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"state does not fit this model ({err})", str(path)) from err
    trainer.step = state["step"]
    trainer.last_checkpoint_step, trainer.last_checkpoint = state["step"], path
    trainer.last_loss, trainer.last_val_loss = state.get("last_loss"), state.get("last_val_loss")
    return trainer


def _check_prompt(prompt: str, tokenizer: CharTokenizer) -> None:
    missing = tokenizer.unknown_chars(prompt)
    if missing:
        raise ConfigError(
            f"sampling_prompt={prompt!r} has characters the vocabulary lacks: {''.join(missing)!r}",
            key="sampling_prompt",
            hint="use a prompt made of characters that occur in the training text",
        )
