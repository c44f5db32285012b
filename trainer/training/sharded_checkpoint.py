"""An FSDP run's checkpoints: written by every rank into one partial directory, and the state
of any checkpoint (sharded or whole) loaded into a run of either kind.

Writing keeps the checkpoint format's contract (trainer/checkpoint/write.py): rank 0 makes the
hidden partial directory and tells the others where it is; every rank writes its shards of the
model and of the optimizer state into it (torch.distributed.checkpoint); rank 0 then adds the
model's configuration and tokenizer, every rank's RNG state and trainer_state.json, writes the
manifest last and renames the directory into place. Whatever fails on the way, on any rank,
rank 0 removes the partial directory, so no loadable checkpoint is ever half written.

No rank gathers the whole model at a save: that would put a full copy on rank 0, the memory
FSDP exists to save. Whole weights are gathered offline from the shards when someone needs
them (register-model, export-model, generate, a resume into one process or DDP: trainer/models/loading.py).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainer.checkpoint.layout import MODEL_SHARDS, OPTIMIZER_SHARDS, SHARDED_FORMAT_VERSION, is_sharded
from trainer.checkpoint.tensors import save_tensors
from trainer.checkpoint.write import begin_checkpoint, finish_checkpoint, removed_on_failure, write_checkpoint
from trainer.errors import NonFiniteStateError
from trainer.models.lora import LoraAdapter
from trainer.training import distributed
from trainer.training.finite import first_non_finite, optimizer_tensors
from trainer.training.optimizer_state import by_name, by_number, parameter_names
from trainer.training.rng_state import capture_rng_state, rng_file_contents
from trainer.training.state_files import OPTIMIZER_FILE, RNG_FILE, blamed_on, check_state_shapes, load_optimizer_state

if TYPE_CHECKING:
    from trainer.training.loop import Trainer


def save_sharded_checkpoint(trainer: Trainer) -> Path:
    """Every rank calls this at the same step; returns the checkpoint's directory on every rank."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from trainer.checkpoint.shards import save_shards

    check_shards_finite(trainer)  # every rank its own shards, before any file of this step exists
    if isinstance(trainer.adapter, LoraAdapter):
        return _save_gathered_adapter(trainer)
    step, main = trainer.step, distributed.current().is_main
    partial = distributed.on_main(lambda: begin_checkpoint(trainer.run.run_dir / "checkpoints", step))
    with removed_on_failure(partial, step) if main else contextlib.nullcontext():
        model_state, optimizer_state = get_state_dict(trainer.model, trainer.optimizer)
        save_shards({"model": model_state}, partial / MODEL_SHARDS)
        save_shards({"optimizer": optimizer_state}, partial / OPTIMIZER_SHARDS)
        rng_states = distributed.gather_to_main(capture_rng_state())
    return distributed.on_main(lambda: _finish(trainer, partial, rng_states))


def _finish(trainer: Trainer, partial: Path, rng_states: list[dict[str, Any]]) -> Path:
    """Rank 0: the files beside the shards, the manifest last, the rename."""
    writers = [
        lambda d: trainer.adapter.save(d, trainer.run.lineage, weights=False),
        lambda d: save_tensors(rng_file_contents(rng_states), d / RNG_FILE),
    ]
    world_size = distributed.current().world_size
    state = {
        **trainer.trainer_state(),
        "sharded": {"format": "torch.distributed.checkpoint", "world_size": world_size, "model": MODEL_SHARDS},
    }
    path = finish_checkpoint(partial, trainer.step, writers, state, SHARDED_FORMAT_VERSION)
    trainer.after_checkpoint(path)
    return path


def _save_gathered_adapter(trainer: Trainer) -> Path:
    """A LoRA run under FSDP saves what a LoRA run saves anywhere: peft's adapter files and a
    whole optimizer.pt, never the frozen base. Its trainable weights are a few MB, so rank 0
    gathers them (and their optimizer state) whole instead of writing shards, and the
    checkpoint resumes, registers and exports like any LoRA run's."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    gathered = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(
        trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    )
    named = get_optimizer_state_dict(trainer.model, trainer.optimizer, options=gathered)
    rng_states = distributed.gather_to_main(capture_rng_state())

    def write() -> Path:
        optimizer = by_number(named, parameter_names(trainer.optimizer, trainer.model), trainer.optimizer)
        writers = [
            lambda d: trainer.adapter.save(d, trainer.run.lineage, weights),
            lambda d: save_tensors(optimizer, d / OPTIMIZER_FILE),
            lambda d: save_tensors(rng_file_contents(rng_states), d / RNG_FILE),
        ]
        path = write_checkpoint(trainer.run.run_dir / "checkpoints", trainer.step, writers, trainer.trainer_state())
        trainer.after_checkpoint(path)
        return path

    return distributed.on_main(write)


def check_shards_finite(trainer: Trainer) -> None:
    """Each rank looks at its own shards of the weights and of the optimizer state; all agree
    on the first that is not finite (in rank order), and every rank raises for it."""
    from torch.distributed.tensor import DTensor

    def local(named):
        return ((name, t.to_local() if isinstance(t, DTensor) else t) for name, t in named)

    bad_weight = first_non_finite(local(trainer.model.state_dict().items()))
    bad_state = None if bad_weight else first_non_finite(local(optimizer_tensors(trainer.optimizer, trainer.model)))
    found = [None] * distributed.current().world_size
    torch.distributed.all_gather_object(found, (bad_weight, bad_state))
    last = str(trainer.last_checkpoint) if trainer.last_checkpoint is not None else None
    for weight, _ in found:
        if weight is not None:
            raise NonFiniteStateError(trainer.step, f"the weights ({weight})", last)
    for _, state in found:
        if state is not None:
            raise NonFiniteStateError(trainer.step, f"the optimizer state ({state})", last)


def load_training_state(trainer: Trainer, path: Path, sharded_run: bool) -> None:
    """The optimizer state of checkpoint ``path`` into ``trainer`` (and, from shards into a
    sharded run, the weights: other runs got them when the model was loaded), whichever kind
    of run wrote it. Whatever does not fit is a CheckpointError naming the files."""
    if not is_sharded(path):
        if sharded_run:  # optimizer.pt of one process or DDP, spread over the shards
            _load_whole_optimizer_into_shards(trainer, path)
        else:
            load_optimizer_state(trainer.optimizer, path)
        return
    if sharded_run:
        _load_shards(trainer, path)
    else:  # one process or DDP: the optimizer state gathered whole from the shards
        from trainer.checkpoint.shards import read_full

        with blamed_on(path, OPTIMIZER_SHARDS):
            named = read_full(path / OPTIMIZER_SHARDS)["optimizer"]
            names = parameter_names(trainer.optimizer, trainer.model)
            trainer.optimizer.load_state_dict(by_number(named, names, trainer.optimizer))
            check_state_shapes(trainer.optimizer)


def _load_shards(trainer: Trainer, path: Path) -> None:
    """Each rank reads the parts of the saved shards its own shards cover: N ranks' checkpoint
    on M ranks. The templates are this run's own state dicts, so DCP knows the new layout."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from trainer.checkpoint.shards import load_shards

    model_state, optimizer_state = get_state_dict(trainer.model, trainer.optimizer)
    model, optimizer = {"model": model_state}, {"optimizer": optimizer_state}
    load_shards(model, path / MODEL_SHARDS)
    load_shards(optimizer, path / OPTIMIZER_SHARDS)
    with blamed_on(path, OPTIMIZER_SHARDS):
        set_state_dict(
            trainer.model, trainer.optimizer, model_state_dict=model["model"], optim_state_dict=optimizer["optimizer"]
        )


def _load_whole_optimizer_into_shards(trainer: Trainer, path: Path) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    from trainer.checkpoint.tensors import load_tensors

    with blamed_on(path, OPTIMIZER_FILE):
        names = parameter_names(trainer.optimizer, trainer.model)
        named = by_name(load_tensors(path / OPTIMIZER_FILE), names)
        # full_state_dict: whole tensors, which every rank cuts to its own shard.
        set_optimizer_state_dict(
            trainer.model, trainer.optimizer, named, options=StateDictOptions(full_state_dict=True)
        )
