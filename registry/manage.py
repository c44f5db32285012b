"""Deleting models and validating the registry as a whole."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from registry.hub import remove_tree
from registry.store import (
    DELETING_PREFIX,
    LOCK_FILE,
    STAGING_PREFIX,
    ModelEntry,
    Registry,
    dependents,
    inside,
    is_registry_file,
    moves_undone_on_failure,
)
from trainer.errors import ModelNotFoundError, RegistryError, UsageError
from trainer.files import sha256_of


def delete_model(registry: Registry, name: str, force: bool = False) -> ModelEntry:
    """Remove an entry and its directory.

    Under the lock the directory is renamed to a hidden .deleting-* name and the entry
    removed; the files are deleted after. A crash in between leaves a state that
    validate-registry names (an entry without files, or a leftover .deleting-* directory).
    An index that cannot be written (a full disk) is rolled back, not finished by a later
    command: the directory is renamed back under the lock, so the model stays whole and
    registered, and the same delete works once there is room.
    """
    with registry.locked() as entries, moves_undone_on_failure() as move:
        if name not in entries:
            raise ModelNotFoundError(name, sorted(entries))
        children = dependents(entries, name)
        if children and not force:
            raise UsageError(
                f"'{name}' has fine-tunes in the registry: {', '.join(children)}",
                hint="delete those first, or add --force (they keep a dangling fine_tuned_from)",
            )
        entry = entries.pop(name)
        directory = registry.model_dir(entry)  # root/<a valid name>: entries() checks local_path
        _refuse_to_delete_what_is_not_its_own(registry, entry, entries)
        doomed = None
        if directory.parent == registry.root and (directory.is_symlink() or directory.exists()):
            doomed = registry.root / f"{DELETING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            move(directory, doomed)  # renames a link itself, never its target
        registry.write(entries)
    if doomed is not None:
        remove_tree(doomed)
    return entry


def _refuse_to_delete_what_is_not_its_own(registry: Registry, entry: ModelEntry, others: dict[str, ModelEntry]) -> None:
    """A hand-edited index can point two entries at one directory, or an entry at a file:
    deleting would take files another model needs, or something that is no model at all."""
    directory = registry.model_dir(entry)
    sharing = entries_using(others, entry.local_path)
    if sharing:
        raise RegistryError(
            f"'{entry.name}' shares its directory {directory} with {', '.join(sharing)}; nothing was deleted",
            hint=f"give each entry its own local_path in {registry.index_path}, then delete again",
        )
    if directory.is_file() and not directory.is_symlink():
        raise RegistryError(
            f"'{entry.name}' has local_path {entry.local_path!r}, which is a file, not a model directory; "
            "nothing was deleted",
            hint=f"move {directory} aside or correct the entry in {registry.index_path}, then delete again",
        )


def entries_using(entries: dict[str, ModelEntry], local_path: str) -> list[str]:
    return sorted(name for name, entry in entries.items() if entry.local_path == local_path)


def validate_registry(registry: Registry, quick: bool = False) -> list[str]:
    """Every problem found, as one line each; empty when the registry is consistent.

    Holds the registry lock, so no import or delete commits half-way through the check.
    """
    if not registry.root.exists():
        return []
    with FileLock(str(registry.root / LOCK_FILE), timeout=120):
        try:
            entries = registry.entries()
        except RegistryError as err:
            return [str(err)]
        problems: list[str] = []
        for name, entry in sorted(entries.items()):
            problems += [f"{name}: {problem}" for problem in check_entry(registry, entry, entries, quick)]
        problems += _shared_directories(entries)
        problems += _stray_paths(registry, {entry.local_path for entry in entries.values()})
    return problems


def _shared_directories(entries: dict[str, ModelEntry]) -> list[str]:
    problems = []
    for path in sorted({entry.local_path for entry in entries.values()}):
        names = entries_using(entries, path)
        if len(names) > 1:
            problems.append(
                f"{path}: entries {', '.join(map(repr, names))} share this directory "
                "(delete-model refuses them); give each entry its own local_path"
            )
    return problems


def _stray_paths(registry: Registry, known: set[str]) -> list[str]:
    problems = []
    for path in sorted(registry.root.iterdir()):
        if is_registry_file(path.name):
            continue
        if path.name.startswith(STAGING_PREFIX):
            if _abandoned(path):
                problems.append(f"{path.name}: left by an interrupted import (no entry uses it); delete it")
        elif path.name.startswith(DELETING_PREFIX):
            problems.append(f"{path.name}: left by an interrupted delete-model; delete it")
        elif path.name not in known:
            problems.append(f"{path.name}: no registry entry uses it (orphan)")
    return problems


def _abandoned(staged: Path) -> bool:
    """An import holds its staging directory's lock while it runs; a killed one does not."""
    try:
        with FileLock(f"{staged}.lock", timeout=0):
            return True
    except Timeout:
        return False  # an import in progress


def check_entry(registry: Registry, entry: ModelEntry, entries: dict[str, ModelEntry], quick: bool) -> list[str]:
    directory = registry.model_dir(entry)
    linked = _linked_directory(registry, directory)
    if linked:
        return linked
    if directory.is_file():
        return [f"{directory} is a file, not a model directory"]
    if not directory.is_dir():
        return [f"directory {directory} is missing"]
    problems = []
    for relative, expected in sorted(entry.files.items()):
        problems += _check_file(directory / relative, expected, quick)
    problems += _linked_files(directory)
    problems += [
        f"{path} is not one of the entry's files"
        for path in _all_paths(directory)
        if path.is_file() and not path.is_symlink() and str(path.relative_to(directory)) not in entry.files
    ]
    problems += _check_readable(directory, entry)
    if entry.fine_tuned_from is not None and entry.fine_tuned_from not in entries:
        problems.append(f"fine_tuned_from '{entry.fine_tuned_from}' is not in the registry (dangling)")
    if entry.adapter_base is not None and entry.adapter_base not in entries:
        problems.append(f"adapter_base '{entry.adapter_base}' is not in the registry: the adapter cannot load")
    return problems


def link_problems(registry: Registry, entry: ModelEntry) -> list[str]:
    """Links in a model's place, which can lead out of the registry: its directory or anything
    in it. Cheap (no hashing), so training checks it before loading a model."""
    directory = registry.model_dir(entry)
    return _linked_directory(registry, directory) or _linked_files(directory)


def _linked_directory(registry: Registry, directory: Path) -> list[str]:
    if directory.is_symlink() or not inside(registry.root, directory):
        return [f"{directory} is a link or lies outside the registry root"]
    return []


def _linked_files(directory: Path) -> list[str]:
    return [
        f"{path} is a symbolic link (registry files must be regular files)"
        for path in _all_paths(directory)
        if path.is_symlink()
    ]


def _check_file(path: Path, expected: dict, quick: bool) -> list[str]:
    try:
        if path.is_symlink() or not path.is_file():
            return [] if path.is_symlink() else [f"file {path} is missing"]
        size = path.stat().st_size
        if size != expected["bytes"]:
            return [f"file {path} has {size} bytes, expected {expected['bytes']}"]
        if not quick and sha256_of(path) != expected["sha256"]:
            return [f"file {path} does not match its sha256"]
    except OSError as err:
        return [f"file {path} cannot be read ({err.strerror})"]
    return []


def _all_paths(directory: Path) -> list[Path]:
    """Every file and link below ``directory``, without following links."""
    found = []
    for folder, subfolders, files in os.walk(directory, followlinks=False):
        found += [Path(folder) / name for name in files]
        found += [Path(folder) / name for name in subfolders if (Path(folder) / name).is_symlink()]
    return sorted(found)


def _check_readable(directory: Path, entry: ModelEntry) -> list[str]:
    problems = []
    config = directory / "config.json"
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
            problems.append(f"config.json does not parse ({err})")
    for weights in sorted(directory.glob("*.safetensors")):
        try:
            from safetensors import safe_open

            with safe_open(str(weights), framework="numpy") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own error types for a bad header
            problems.append(f"{weights.name}: safetensors header unreadable ({err})")
    return problems
