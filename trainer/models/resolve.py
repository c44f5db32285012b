"""SOURCE, as the commands that use a model (generate, chat, evaluate) take it, and loading it.

SOURCE is one of three kinds, tried in this order:

- a checkpoint directory (``checkpoints/step-*``), verified against its manifest;
- a run directory: its newest checkpoint that verifies (newer damaged ones are passed over,
  and named, never moved: using a model changes nothing on disk);
- a registry model name (``list-models``), when no file or directory of that name exists.

``resolve_source`` answers from the files alone, before torch loads a weight, so a wrong
SOURCE or a damaged checkpoint fails at once with one line. ``load_for_use`` then loads the
model behind its adapter (custom or Hugging Face) on a device, in a precision, for inference.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from registry.store import Registry
from trainer.checkpoint.find import Damaged, newest_valid
from trainer.checkpoint.layout import MANIFEST, STEP_DIR_PATTERN, TRAINER_STATE
from trainer.checkpoint.verify import verify_checkpoint
from trainer.errors import CheckpointError, LmrunnerError, UsageError, did_you_mean, first_line
from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter
from trainer.models.loading import load_adapter
from trainer.models.lora import is_adapter_dir, load_lora
from trainer.models.source import registry_model

KINDS = "a checkpoint directory (checkpoints/step-*), a run directory (outputs/<date>/<time>) or a registry model name"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ResolvedSource:
    given: str  # SOURCE as the user wrote it
    kind: str  # "checkpoint", "run directory" or "registry model"
    directory: Path  # where the model's files are
    architecture_type: str
    run_config: dict[str, Any] = field(default_factory=dict)  # the training config, when it was trained here
    passed_over: list[Damaged] = field(default_factory=list)  # a run directory's newer, damaged checkpoints
    registry: Registry | None = None  # where a LoRA adapter's base is looked up

    def base_registry(self) -> Registry:
        """The registry of the run that trained it, if it named one; else the one SOURCE was looked up in."""
        if self.run_config.get("registry_dir"):
            return Registry(Path(self.run_config["registry_dir"]))
        return self.registry or Registry()

    def describe(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint {self.directory}"
        if self.kind == "run directory":
            return f"run directory {self.given}, checkpoint {self.directory.name}"
        return f"registry model {self.given} ({self.directory})"


def resolve_source(given: str, registry: Registry) -> ResolvedSource:
    path = Path(given)
    if path.exists() or path.is_symlink():
        return dataclasses.replace(_from_path(given, path), registry=registry)
    entries = registry.entries()
    if given in entries:
        source = registry_model(registry, given)
        saved = _saved_config(source.directory)
        return ResolvedSource(given, "registry model", source.directory, source.architecture_type, saved, [], registry)
    names = sorted(entries)
    raise UsageError(
        f"SOURCE '{given}' is not {KINDS}: no such file or directory, and the registry at {registry.root} "
        f"has no such model{did_you_mean(given, names)}; registry models: {', '.join(names) or 'none yet'}",
        hint="check the path, or list the models with: python main.py list-models",
    )


def _from_path(given: str, path: Path) -> ResolvedSource:
    if (path / MANIFEST).exists() or STEP_DIR_PATTERN.match(path.name):
        return _checkpoint(given, "checkpoint", path, [])
    if (path / "checkpoints").is_dir():
        latest, damaged = newest_valid(path / "checkpoints")
        if latest is None:
            why = f" (the newest, {damaged[0].path.name}: {damaged[0].reason})" if damaged else ""
            raise CheckpointError(f"run directory has no complete checkpoint{why}", given)
        return _checkpoint(given, "run directory", latest, damaged)
    raise UsageError(
        f"SOURCE '{given}' exists but is not {KINDS}",
        hint="a run directory holds checkpoints/; a checkpoint holds manifest.json; "
        "to use a Hugging Face model directory, import it first: python main.py import-model DIR",
    )


def _checkpoint(given: str, kind: str, directory: Path, passed_over: list[Damaged]) -> ResolvedSource:
    state = verify_checkpoint(directory)  # a damaged file: one line naming it
    architecture = (state.get("lineage") or {}).get("architecture_type", CUSTOM_ARCHITECTURE)
    return ResolvedSource(given, kind, directory, architecture, dict(state["config"]), passed_over)


def _saved_config(directory: Path) -> dict[str, Any]:
    """A registered fine-tune keeps its checkpoint's trainer_state.json; an imported model has none."""
    try:
        return dict(json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def load_for_use(source: ResolvedSource, device: torch.device, precision: str, tokenizer=None) -> ModelAdapter:
    """The model behind its adapter, in eval mode, on ``device``, its weights in ``precision``
    (``tokenizer``: its own tokenizer, loaded already)."""
    try:
        if is_adapter_dir(source.directory):  # a LoRA adapter (checkpoint or registered): on its base
            adapter = load_lora(source.directory, source.base_registry(), dropout=0.0, trainable=False)
        else:
            adapter = load_adapter(source.directory, source.architecture_type, dropout=0.0, tokenizer=tokenizer)
    except LmrunnerError:  # already one line that says what to do (e.g. custom code refused)
        raise
    except Exception as err:  # transformers and safetensors raise their own types for a bad file
        if source.kind == "registry model":
            raise UsageError(
                f"model '{source.given}' in {source.directory} could not be loaded: {first_line(err)}",
                hint="run: python main.py validate-registry, or import the model again with --force",
            ) from err
        raise CheckpointError(
            f"the model or tokenizer in it is unusable ({first_line(err)})", str(source.directory)
        ) from err
    adapter.model.to(device=device, dtype=PRECISIONS[precision]).eval()
    return adapter


def load_model(
    source: str, device: str = "cpu", precision: str = "fp32", registry_dir: str | None = None
) -> ModelAdapter:
    """The Python door to what the commands load: SOURCE (a checkpoint, a run directory or a
    registry name, looked up in ``registry_dir``, else $LMRUNNER_HOME, else ./models), behind
    its adapter: ``.model``, ``.tokenizer``, ``.generate``, ``.logits``."""
    resolved = resolve_source(source, Registry(Path(registry_dir) if registry_dir else None))
    return load_for_use(resolved, torch.device(device), precision)
