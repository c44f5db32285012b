"""export-model: a standalone Hugging Face folder from a checkpoint or a registry model.

The folder holds what ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` need
(config.json, safetensors, generation_config.json, the tokenizer) and a model card naming
the Hub model it descends from; nothing of lmrunner's own (no optimizer, RNG or manifest),
and nothing that needs lmrunner or peft to load. A LoRA adapter is merged into its base with
``merge=True``; without it, the adapter is exported as an adapter (peft's two files, its
base named by Hub id), which peft loads on that base.

The folder appears whole or not at all: it is written beside OUT_DIR under a temporary name
and renamed into place, and an existing OUT_DIR (``force``) is replaced only once the new one
is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from registry.store import Registry
from trainer.checkpoint.layout import TRAINER_STATE
from trainer.errors import UsageError
from trainer.files import fsync_dir, fsync_file
from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter
from trainer.models.loading import load_adapter
from trainer.models.lora import BASE_FILE, LoraAdapter, is_adapter_dir, load_lora
from trainer.models.model_card import write_model_card
from trainer.models.resolve import ResolvedSource
from trainer.models.source import registry_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ExportResult:
    directory: Path
    kind: str  # "model", "merged LoRA model" or "adapter"
    dtype: str
    files: list[str]
    bytes: int
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. nothing to merge)


def check_destination(out_dir: Path, source: ResolvedSource, force: bool) -> None:
    """Refuse, before anything loads, a destination that would lose saved work: a non-empty
    directory without ``force``, a file, or a place inside the source or the registry."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UsageError(f"OUT_DIR {out_dir} exists and is not a directory", hint="give the path of a new directory")
    resolved = out_dir.resolve()
    for guarded, what in ((source.directory, "SOURCE"), (source.base_registry().root, "the model registry")):
        guarded = Path(guarded).resolve()
        if resolved == guarded or resolved.is_relative_to(guarded) or guarded.is_relative_to(resolved):
            raise UsageError(
                f"OUT_DIR {out_dir} overlaps {what} ({guarded}); an export never writes there",
                hint="give a directory outside it, such as exports/NAME",
            )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UsageError(
            f"OUT_DIR {out_dir} is not empty",
            hint="give a new directory, or add --force to replace its contents with the export",
        )


def export_model(source: ResolvedSource, out_dir: Path, *, merge: bool, dtype: str, force: bool) -> ExportResult:
    """Write ``source`` as a Hugging Face folder at ``out_dir`` (see the module's docstring)."""
    check_destination(out_dir, source, force)
    if source.architecture_type == CUSTOM_ARCHITECTURE:
        raise UsageError(
            f"{source.describe()} is lmrunner's character-level Transformer, which has no Hugging Face "
            "architecture to export to",
            hint="use it where it is (generate, chat, evaluate); export-model takes fine-tunes of Hugging Face models",
        )
    notes = []
    registry = source.base_registry()
    if is_adapter_dir(source.directory):
        lora = load_lora(source.directory, registry, dropout=0.0, trainable=False)
        if merge:
            adapter, kind = lora.merged(), "merged LoRA model"
        else:
            adapter, kind = lora, "adapter"
            notes.append(
                "SOURCE is a LoRA adapter: exported as an adapter, which needs peft and its base model "
                f"({lora.base_ref.get('model_id') or lora.base_ref['registry_name']}) to load; "
                "--merge writes standalone weights instead"
            )
    else:
        adapter, kind = load_adapter(source.directory, source.architecture_type, dropout=0.0), "model"
        if merge:
            notes.append(
                f"{source.given} has no LoRA adapter; --merge has nothing to fold in, the weights are exported as they are"
            )
    adapter.model.to(DTYPES[dtype]).eval()
    lineage = _lineage(source, registry)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _write(adapter, kind, lineage, partial)
        _publish(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    files = sorted(p.name for p in out_dir.iterdir())
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    return ExportResult(out_dir, kind, dtype, files, size, notes)


def _write(adapter: ModelAdapter, kind: str, lineage: dict[str, Any], directory: Path) -> None:
    if isinstance(adapter, LoraAdapter):  # adapter only: peft's files, its base named by Hub id
        adapter.peft_model.peft_config["default"].base_model_name_or_path = lineage.get("model_id")
        adapter.save_adapter_files(directory)
        adapter.tokenizer.save_pretrained(directory)
        write_model_card(directory, lineage, relation="adapter", library="peft", beside_state=False)
    else:
        adapter.model.save_pretrained(str(directory))  # config.json records the dtype written
        adapter.tokenizer.save_pretrained(directory)
        relation = "merge" if kind == "merged LoRA model" else "finetune" if lineage.get("fine_tuned_from") else None
        write_model_card(directory, lineage, relation=relation, beside_state=False)
    for path in directory.iterdir():
        fsync_file(path)
    fsync_dir(directory)


def _publish(partial: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an existing OUT_DIR is moved aside first and
    removed only after the new one stands where it stood."""
    replaced = None
    if out_dir.exists():
        replaced = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        out_dir.rename(replaced)
    partial.rename(out_dir)
    fsync_dir(out_dir.parent)
    if replaced is not None:
        shutil.rmtree(replaced)


def _lineage(source: ResolvedSource, registry: Registry) -> dict[str, Any]:
    """Where the model came from: a checkpoint's (or a registered fine-tune's) recorded
    lineage; for an imported registry model, its Hub id; for an adapter, its base's Hub id
    when the lineage lacks one."""
    lineage: dict[str, Any] = {}
    state_file = source.directory / TRAINER_STATE
    if state_file.is_file():
        lineage = dict(json.loads(state_file.read_text(encoding="utf-8")).get("lineage") or {})
    elif source.kind == "registry model":
        model = registry_model(source.registry or registry, source.given)
        lineage = {"model_id": model.model_id, "chain": model.chain, "architecture_type": model.architecture_type}
    if is_adapter_dir(source.directory) and not lineage.get("model_id"):
        base = json.loads((source.directory / BASE_FILE).read_text(encoding="utf-8"))
        lineage["model_id"] = base.get("model_id")
    return lineage
