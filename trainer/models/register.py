"""Registering a training checkpoint as a registry model: the other direction of models/source.py.

The registry (registry/) knows nothing of checkpoints; this module reads one (verified against
its manifest), picks the files a model needs and hands them to the registry's staged commit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from registry.hub import commit_staged, count_parameters, staging
from registry.store import ModelEntry, Registry, validate_name
from trainer.checkpoint.find import resolve_resume_path
from trainer.checkpoint.layout import MANIFEST, TRAINER_STATE, is_sharded
from trainer.checkpoint.verify import verify_checkpoint
from trainer.errors import UsageError
from trainer.models.adapter import CUSTOM_ARCHITECTURE
from trainer.models.loading import load_adapter
from trainer.models.lora import BASE_FILE, is_adapter_dir


def register_checkpoint(registry: Registry, checkpoint: Path, name: str, force: bool = False) -> ModelEntry:
    """A training checkpoint (or a run directory's latest) as a new registry model, source
    finetune, with its lineage. The optimizer and RNG state stay behind, and so does the
    checkpoint's manifest, which lists them; the registry keeps its own hashes."""
    validate_name(name)
    registry.refuse_taken(name, force)
    checkpoint = resolve_resume_path(checkpoint)
    state = verify_checkpoint(checkpoint)
    lineage = state.get("lineage", {})
    # A LoRA run's checkpoint is an adapter: registered as one, small, naming the model it applies to.
    adapter_base = (
        json.loads((checkpoint / BASE_FILE).read_text(encoding="utf-8"))["registry_name"]
        if is_adapter_dir(checkpoint)
        else None
    )
    if adapter_base is not None and adapter_base not in registry.entries():
        raise UsageError(
            f"{checkpoint} is a LoRA adapter of '{adapter_base}', which is not in the registry",
            hint="import or register that base model first (under the same name)",
        )
    if is_sharded(checkpoint):  # an FSDP run's: its shards gathered into an ordinary model folder
        with tempfile.TemporaryDirectory(prefix="lmrunner-consolidate-") as whole:
            consolidate(checkpoint, Path(whole), lineage)
            shutil.copy2(checkpoint / TRAINER_STATE, Path(whole) / TRAINER_STATE)  # kept, as from any checkpoint
            return _commit(registry, name, sorted(Path(whole).iterdir()), checkpoint, state, adapter_base, force)
    left_out = {MANIFEST, "optimizer.pt", "rng_state.pt"}
    files = [p for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name not in left_out]
    return _commit(registry, name, files, checkpoint, state, adapter_base, force)


def consolidate(checkpoint: Path, directory: Path, lineage: dict) -> None:
    """An FSDP checkpoint's model, gathered whole from its shards, saved into ``directory`` as
    any checkpoint holds it (model.safetensors, or the save_pretrained layout) with its tokenizer."""
    architecture = lineage.get("architecture_type", CUSTOM_ARCHITECTURE)
    load_adapter(checkpoint, architecture, dropout=0.0).save(directory, lineage)


def _commit(
    registry: Registry,
    name: str,
    files: list[Path],
    checkpoint: Path,
    state: dict,
    adapter_base: str | None,
    force: bool,
) -> ModelEntry:
    lineage = state.get("lineage", {})
    with staging(registry, name, files) as staged:
        entry = ModelEntry(
            name=name,
            source="finetune",
            architecture_type=lineage.get("architecture_type", CUSTOM_ARCHITECTURE),
            model_type=lineage.get("model_type"),
            model_id=lineage.get("model_id"),
            local_path=name,
            num_parameters=count_parameters(staged),
            tokenizer=state.get("tokenizer"),
            fine_tuned_from=lineage.get("fine_tuned_from"),
            adapter_base=adapter_base,
            source_path=str(checkpoint.resolve()),
            run_id=state.get("run_id"),
            step=state.get("step"),
            config_hash=state.get("config_hash"),
        )
        return commit_staged(registry, entry, staged, force)
