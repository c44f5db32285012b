"""The registry index: ``<root>/registry.json`` plus one directory per model.

Reads need no lock: the index is only ever replaced whole (write a temporary file, fsync,
rename), so a reader sees the old index or the new one. Every write holds the file lock,
re-reads the index, changes it and replaces it. An index that cannot be read is reported
(exit 5) and never overwritten.

No torch and no transformers here: list-models and model-info must answer at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from trainer.errors import ModelNotFoundError, RegistryError, StorageError, UsageError

SCHEMA_VERSION = 1
INDEX_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Hidden working directories: an import being staged, a delete being finished.
STAGING_PREFIX = ".importing-"
DELETING_PREFIX = ".deleting-"


def default_root() -> Path:
    return Path(os.environ.get("LMRUNNER_HOME") or "models")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"invalid model name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', no '..')",
            hint="e.g. --name qwen2.5-0.5b",
        )
    if is_reserved(name):  # a model directory by that name would take the index's or a lock's place
        raise UsageError(
            f"model name {name!r} is kept for the registry's own files ({INDEX_FILE}, locks, temporary files)",
            hint="choose another --name, e.g. --name my-model",
        )
    return name


def is_registry_file(name: str) -> bool:
    """The index, its temporary copies and the lock files the registry keeps beside the models."""
    return name in (INDEX_FILE, LOCK_FILE) or name.startswith(f".{INDEX_FILE}") or name.endswith(".lock")


def is_reserved(name: str) -> bool:
    """Names no model directory may take: the registry's own files and working directories."""
    return is_registry_file(name) or name.startswith((STAGING_PREFIX, DELETING_PREFIX))


@dataclass
class ModelEntry:
    name: str
    source: str  # huggingface | local | finetune
    architecture_type: str  # qwen, llama, ..., custom-transformer
    local_path: str  # relative to the registry root
    model_id: str | None = None  # the Hugging Face repo id it came from
    model_type: str | None = None  # config.json's model_type
    revision: str | None = None  # the commit sha it was downloaded at
    num_parameters: int | None = None
    disk_size_bytes: int = 0
    tokenizer: str | None = None
    fine_tuned_from: str | None = None
    adapter_base: str | None = None  # a LoRA adapter: the registry model whose weights it applies to
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> {sha256, bytes}
    source_path: str | None = None  # the local directory or checkpoint it was imported from
    run_id: str | None = None  # for fine-tunes: the run, step and config they came from
    step: int | None = None
    config_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelEntry:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class Registry:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.index_path = self.root / INDEX_FILE

    # --- reading --------------------------------------------------------------------

    def entries(self) -> dict[str, ModelEntry]:
        if not self.index_path.exists():
            return {}
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            if data.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
            entries = {name: ModelEntry.from_dict(values) for name, values in data["entries"].items()}
            for name, entry in entries.items():
                _check_entry_shape(name, entry)
            return entries
        # RecursionError: json gives up on a deeply nested document; it is as unreadable as any other.
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            raise RegistryError(
                f"the registry index {self.index_path} is unreadable ({err}); it was left as it is",
                hint="restore it from a backup or move it aside; the model directories are untouched",
            ) from err

    def get(self, name: str) -> ModelEntry:
        entries = self.entries()
        if name not in entries:
            raise ModelNotFoundError(name, sorted(entries))
        return entries[name]

    def model_dir(self, entry: ModelEntry) -> Path:
        return self.root / entry.local_path

    def lineage(self, name: str) -> list[str]:
        """The chain root -> ... -> name along fine_tuned_from (stops at a missing parent or a cycle)."""
        entries = self.entries()
        chain = [name]
        while (parent := entries[chain[-1]].fine_tuned_from if chain[-1] in entries else None) is not None:
            if parent in chain:
                break
            chain.append(parent)
        return list(reversed(chain))

    def children(self, name: str) -> list[str]:
        return dependents(self.entries(), name)

    def refuse_taken(self, name: str, force: bool) -> None:
        """Refuse a name already registered, unless ``force`` (checked early; the commit checks again)."""
        if not force and name in self.entries():
            raise UsageError(f"model '{name}' is already in the registry", hint="add --force to replace it")

    # --- writing --------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[dict[str, ModelEntry]]:
        """Hold the lock and give the entries as read under it; ``write`` saves changes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / LOCK_FILE), timeout=120):
            yield self.entries()

    @contextmanager
    def editing(self) -> Iterator[dict[str, ModelEntry]]:
        """Lock, re-read, let the caller change the entries, then replace the index atomically."""
        with self.locked() as entries:
            yield entries
            self.write(entries)

    def write(self, entries: dict[str, ModelEntry]) -> None:
        """Replace the index atomically (call it holding the lock). On failure the old index
        stays and no temporary copy is left; the error names the cause (a full disk, ...)."""
        data = {"schema_version": SCHEMA_VERSION, "entries": {n: entries[n].to_dict() for n in sorted(entries)}}
        partial = self.index_path.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        try:
            with partial.open("w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.index_path)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise StorageError(
                f"cannot write the registry index {self.index_path}: {err.strerror or err}; "
                "the registry was left as it was",
                path=str(self.index_path),
            ) from err


@contextmanager
def moves_undone_on_failure() -> Iterator[Callable[[Path, Path], None]]:
    """``move(source, target)`` renames. If the block fails after some moves (the index cannot
    be written: a full disk), they are undone, last first, so the directories match the index
    that was kept and the same command can simply be run again."""
    done: list[tuple[Path, Path]] = []

    def move(source: Path, target: Path) -> None:
        source.rename(target)
        done.append((source, target))

    try:
        yield move
    except BaseException:
        for source, target in reversed(done):
            target.rename(source)
        raise


def _check_entry_shape(name: str, entry: ModelEntry) -> None:
    """A hand-edited index must not point outside the root or hold the wrong types."""
    if entry.name != name or not NAME_PATTERN.fullmatch(name) or is_reserved(name):
        raise ValueError(f"entry {name!r} has a bad name")
    if not isinstance(entry.local_path, str) or not NAME_PATTERN.fullmatch(entry.local_path):
        raise ValueError(f"entry {name!r} has local_path {entry.local_path!r}, not a directory name in the root")
    if is_reserved(entry.local_path):  # deleting or replacing that "model" would take the index or a lock
        raise ValueError(f"entry {name!r} has local_path {entry.local_path!r}, one of the registry's own files")
    if not isinstance(entry.files, dict) or not all(
        isinstance(f, dict) and isinstance(f.get("sha256"), str) and isinstance(f.get("bytes"), int)
        for f in entry.files.values()
    ):
        raise ValueError(f"entry {name!r} has a malformed files table")


def dependents(entries: dict[str, ModelEntry], name: str) -> list[str]:
    """The models that need ``name``: its fine-tunes, and the adapters that apply to it."""
    return sorted(n for n, e in entries.items() if name in (e.fine_tuned_from, e.adapter_base))


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (links resolved) lies under ``root``."""
    return path.resolve().is_relative_to(root.resolve())
