"""Which model a run starts from, and its lineage: a registry lookup done before anything heavy.

``select_model`` answers from the registry index and a look at file sizes, in milliseconds,
so a wrong model_name or a damaged model directory fails before torch loads a single weight.
``lineage_for`` then says what the run's checkpoints will record about where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from registry.manage import link_problems
from registry.store import ModelEntry, Registry
from trainer.config.schema import TrainingConfig
from trainer.errors import ConfigError, RegistryError, UsageError
from trainer.models.adapter import CUSTOM_ARCHITECTURE

FROM_SCRATCH = "trained from scratch"
# Any one of these makes a directory loadable as a tokenizer (AutoTokenizer or ours).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ModelSource:
    """A registry model to fine-tune, or (name None) a new custom Transformer."""

    name: str | None = None
    entry: ModelEntry | None = None
    directory: Path | None = None
    chain: list[str] = field(default_factory=list)  # root -> ... -> name, along fine_tuned_from
    model_id: str | None = None  # the Hub repo id at the root of the chain, if any

    @property
    def architecture_type(self) -> str:
        return self.entry.architecture_type if self.entry else CUSTOM_ARCHITECTURE


def registry_of(config: TrainingConfig) -> Registry:
    return Registry(Path(config.registry_dir) if config.registry_dir else None)


def select_model(config: TrainingConfig) -> ModelSource:
    """The registry entry behind ``config.model_name``, its files checked to be in place."""
    if config.model_name is None:
        return ModelSource()
    return registry_model(registry_of(config), config.model_name)


def registry_model(registry: Registry, name: str) -> ModelSource:
    """The registry model ``name``, its files checked to be in place (sizes only)."""
    entry = registry.get(name)  # unknown: exit 2 listing what the registry holds
    directory = _unlinked_model_dir(registry, entry)
    missing = _missing_files(directory, entry)
    if missing:
        raise UsageError(
            f"model '{entry.name}' is registered but its files are missing or changed in {directory}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            hint=f"import it again (import-model ... --name {entry.name} --force) or run: python main.py validate-registry",
        )
    chain = registry.lineage(entry.name)
    entries = registry.entries()
    model_id = next((entries[n].model_id for n in chain if n in entries and entries[n].model_id), None)
    return ModelSource(entry.name, entry, directory, chain, model_id)


def _unlinked_model_dir(registry: Registry, entry: ModelEntry) -> Path:
    """The model's directory, refused when it or a file in it is a link: a link can lead out
    of the registry, to files validate-registry never vouched for."""
    linked = link_problems(registry, entry)
    if linked:
        more = f" (and {len(linked) - 1} more)" if len(linked) > 1 else ""
        raise RegistryError(
            f"model '{entry.name}' is not loaded: {linked[0]}{more}",
            hint=f"run: python main.py validate-registry, then import it again (import-model ... --name {entry.name} --force)",
        )
    return registry.model_dir(entry)


def _missing_files(directory: Path, entry: ModelEntry) -> list[str]:
    """Files of the entry that are absent or of another size (sizes only: hashing a large
    model at every start would take seconds; validate-registry hashes)."""
    if not directory.is_dir():
        return [f"{directory.name}/ (the whole directory)"]
    problems = []
    for name, described in sorted(entry.files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != described["bytes"]:
            problems.append(f"{name} has another size")
    return problems


def lineage_for(source: ModelSource, model_type: str | None = None) -> dict[str, Any]:
    """What every checkpoint of a new run records about its origin."""
    if source.name is None:
        return {
            "architecture_type": CUSTOM_ARCHITECTURE,
            "fine_tuned_from": None,
            "chain": [],
            "origin": FROM_SCRATCH,
        }
    return {
        "architecture_type": source.architecture_type,
        "model_type": model_type or source.entry.model_type,
        "model_id": source.model_id,
        "fine_tuned_from": source.name,
        "chain": list(source.chain),
        "origin": f"fine-tuned from {source.name}",
        "fine_tune_started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def check_tokenizer_setting(config: TrainingConfig) -> None:
    """A tokenizer override must name a registry model or an existing directory."""
    setting = config.tokenizer
    if setting is None:
        return
    if Path(setting).is_dir():
        if not any((Path(setting) / name).is_file() for name in TOKENIZER_FILES):
            raise ConfigError(
                f"tokenizer={setting!r} is a directory without tokenizer files ({', '.join(TOKENIZER_FILES)})",
                key="tokenizer",
                hint="point it at a model or tokenizer directory saved with save_pretrained, or a registry name",
            )
        return
    entries = registry_of(config).entries()
    if setting not in entries:
        raise ConfigError(
            f"tokenizer={setting!r} is neither a directory nor a model in the registry",
            key="tokenizer",
            hint="give a registry model name (list-models) or a directory with tokenizer files, or null",
        )


def tokenizer_directory(config: TrainingConfig) -> Path | None:
    """Where the override tokenizer's files are (None: the model's own tokenizer)."""
    if config.tokenizer is None:
        return None
    if Path(config.tokenizer).is_dir():
        return Path(config.tokenizer)
    registry = registry_of(config)
    return _unlinked_model_dir(registry, registry.get(config.tokenizer))
