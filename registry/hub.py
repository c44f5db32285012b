"""Importing models: from the Hugging Face Hub (through huggingface_hub and its cache) or
from a local directory in Hugging Face layout. ``staging`` and ``commit_staged`` also serve
trainer/models/register.py, which registers training checkpoints.

The files are staged in a hidden directory under the registry root, hashed, and renamed
into place under the registry lock just before the entry is written: an interrupted import
leaves no entry and nothing that looks complete (validate-registry points at the leftover).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from filelock import FileLock

from registry.store import (
    DELETING_PREFIX,
    STAGING_PREFIX,
    ModelEntry,
    Registry,
    dependents,
    moves_undone_on_failure,
    validate_name,
)
from trainer.errors import ExitCode, ImportModelError, StorageError, UsageError
from trainer.files import describe_files

# What a causal LM needs to load and tokenize; nothing else (no README, no .bin twins).
NEEDED_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
]
PICKLE_WEIGHTS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
# config.json's model_type -> the registry's architecture_type (one adapter per family).
ARCHITECTURE_TYPES = {
    "qwen2": "qwen",
    "qwen3": "qwen",
    "qwen2_moe": "qwen",
    "qwen3_moe": "qwen",
    "llama": "llama",
    "mistral": "mistral",
    "mixtral": "mistral",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3_text": "gemma",
    "phi": "phi",
    "phi3": "phi",
    "gpt2": "gpt2",
    "gpt_neox": "gpt-neox",
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def import_model(
    registry: Registry,
    source: str,
    name: str | None = None,
    revision: str | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> ModelEntry:
    local = Path(source)
    if local.is_dir():
        name = validate_name(name if name is not None else local.resolve().name.lower())
        origin = {"source": "local", "source_path": str(local.resolve()), "model_id": None, "revision": None}
        files_dir = local
    elif _REPO_ID.match(source):
        name = validate_name(name if name is not None else source.split("/")[-1].lower())
        registry.refuse_taken(name, force)  # before a long download
        files_dir = download(source, revision, allow_pickle, trust_remote_code)
        origin = {"source": "huggingface", "source_path": None, "model_id": source, "revision": files_dir.name}
    else:
        raise UsageError(
            f"{source!r} is neither a local directory nor a Hub repo id (owner/name)",
            hint="e.g. python main.py import-model Qwen/Qwen2.5-0.5B, or a directory with config.json",
        )
    registry.refuse_taken(name, force)
    config = _read_config(files_dir)
    _check_loadable(files_dir, config, trust_remote_code, allow_pickle)
    files = _selected(files_dir, allow_pickle, trust_remote_code)
    with staging(registry, name, files) as staged:
        model_type = config.get("model_type")
        entry = ModelEntry(
            name=name,
            architecture_type=ARCHITECTURE_TYPES.get(model_type, model_type or "unknown"),
            model_type=model_type,
            local_path=name,
            num_parameters=count_parameters(staged),
            tokenizer=_tokenizer_class(staged),
            **origin,
        )
        return commit_staged(registry, entry, staged, force)


def download(repo_id: str, revision: str | None, allow_pickle: bool, trust_remote_code: bool) -> Path:
    """The repo's needed files in the Hugging Face cache; the folder is named by the commit sha.

    HF_HUB_OFFLINE=1 makes this read the cache alone.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = NEEDED_FILES + (PICKLE_WEIGHTS if allow_pickle else []) + (["*.py"] if trust_remote_code else [])
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except GatedRepoError as err:  # a subclass of RepositoryNotFoundError: catch it first
        raise ImportModelError(
            f"{repo_id} is gated: accept its license on huggingface.co and log in",
            hint="run: hf auth login (or set HF_TOKEN), then import again",
            exit_code=ExitCode.USAGE,
        ) from err
    except RepositoryNotFoundError as err:
        raise ImportModelError(
            f"repository {repo_id} not found on the Hub (or private)",
            hint="check the repo id (owner/name), or log in if it is private",
            exit_code=ExitCode.USAGE,
        ) from err
    except RevisionNotFoundError as err:
        raise ImportModelError(
            f"revision {revision!r} not found in {repo_id}",
            hint="give a branch, tag or commit sha that exists",
            exit_code=ExitCode.USAGE,
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise ImportModelError(
            f"cannot reach the Hugging Face Hub and {repo_id} is not in the local cache",
            hint="connect to the internet, or download it first on a machine that can and copy the cache",
        ) from err
    except HfHubHTTPError as err:
        raise ImportModelError(f"the Hub refused the download of {repo_id}: {str(err).splitlines()[0]}") from err
    except ValueError as err:  # HFValidationError: not a valid repo id or revision
        raise ImportModelError(
            f"invalid repo id or revision: {str(err).splitlines()[0]}", exit_code=ExitCode.USAGE
        ) from err
    except Exception as err:  # a transfer that broke off half-way, a full disk, ...
        raise ImportModelError(
            f"downloading {repo_id} failed: {type(err).__name__}: {str(err).splitlines()[0]}",
            hint="run the import again; files already in the cache are kept",
        ) from err


@contextmanager
def staging(registry: Registry, name: str, files: list[Path]) -> Iterator[Path]:
    """A hidden directory under the root holding copies of ``files``, for the time of an import.

    Its lock file is held while it exists, so validate-registry can tell an import in
    progress from one that was killed. Whatever goes wrong, the directory is removed; after a
    commit it has been renamed into place already.
    """
    registry.root.mkdir(parents=True, exist_ok=True)
    staged = registry.root / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    try:
        with FileLock(f"{staged}.lock"):
            try:
                _copy_files(files, staged)
                yield staged
            finally:
                shutil.rmtree(staged, ignore_errors=True)
    finally:
        Path(f"{staged}.lock").unlink(missing_ok=True)


def _copy_files(files: list[Path], staged: Path) -> None:
    """Only this step's errors are the copy's: later ones (the index write, ...) say their own cause."""
    try:
        staged.mkdir()
        for path in files:
            shutil.copyfile(path, staged / path.name)  # follows the cache's links to the real blobs
    except OSError as err:
        # The disk (full, read-only) is at fault, not the command: a runtime error, exit 1.
        raise StorageError(
            f"cannot copy the model's files into {staged}: {err.strerror or err}; nothing was registered",
            path=str(staged),
        ) from err


def commit_staged(registry: Registry, entry: ModelEntry, staged: Path, force: bool) -> ModelEntry:
    """Hash the staged files, then, under the lock, check again, rename them into place and
    write the entry."""
    entry.files = describe_files(staged)
    entry.disk_size_bytes = sum(f["bytes"] for f in entry.files.values())
    final = registry.root / entry.local_path
    replaced = None
    with registry.locked() as entries, moves_undone_on_failure() as move:
        existing = entries.get(entry.name)
        if existing is not None and not force:
            raise UsageError(f"model '{entry.name}' is already in the registry", hint="add --force to replace it")
        children = dependents(entries, entry.name)
        if existing is not None and children:
            raise UsageError(
                f"'{entry.name}' has fine-tunes ({', '.join(children)}); replacing it would change their lineage",
                hint="register under another name, or delete those first",
            )
        if entry.fine_tuned_from is not None and entry.fine_tuned_from not in entries:
            raise UsageError(
                f"the checkpoint was fine-tuned from '{entry.fine_tuned_from}', which is not in the registry",
                hint="import or register the parent model first",
            )
        if existing is None and (final.exists() or final.is_symlink()):
            raise UsageError(
                f"{final} exists but no registry entry uses it; it was left alone",
                hint="move it aside or delete it (validate-registry lists such directories)",
            )
        if existing is not None and (final.exists() or final.is_symlink()):
            replaced = final.with_name(f"{DELETING_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
            move(final, replaced)
        move(staged, final)
        entries[entry.name] = entry
        registry.write(entries)  # if this fails, both moves are undone: the old model is back, staged goes
    if replaced is not None:
        remove_tree(replaced)
    return entry


def count_parameters(directory: Path) -> int | None:
    """Parameters from the safetensors headers alone (no weights are read)."""
    from safetensors import safe_open

    total, found = 0, False
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    total += _product(handle.get_slice(key).get_shape())
                    found = True
        except Exception as err:  # safetensors raises its own types for a bad header
            raise ImportModelError(
                f"{path.name} is not a readable safetensors file ({err})", exit_code=ExitCode.USAGE
            ) from err
    return total if found else None


def remove_tree(path: Path) -> None:
    """Delete a directory without following links out of it (a link is unlinked, not entered)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ImportModelError(
            f"{directory} has no config.json: not a Hugging Face model directory", exit_code=ExitCode.USAGE
        ) from err
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        raise ImportModelError(
            f"{directory}/config.json is not readable JSON ({err})", exit_code=ExitCode.USAGE
        ) from err
    if not isinstance(config, dict):
        raise ImportModelError(f"{directory}/config.json is not a JSON object", exit_code=ExitCode.USAGE)
    return config


def _check_loadable(directory: Path, config: dict[str, Any], trust_remote_code: bool, allow_pickle: bool) -> None:
    tokenizer_config = _json_or_empty(directory / "tokenizer_config.json")
    if ("auto_map" in config or "auto_map" in tokenizer_config) and not trust_remote_code:
        raise ImportModelError(
            "this model needs custom code from its repository (its config has auto_map)",
            hint="add --trust-remote-code if you trust its authors",
            exit_code=ExitCode.USAGE,
        )
    if not list(directory.glob("*.safetensors")):
        pickled = [p for p in directory.iterdir() if any(fnmatch(p.name, pat) for pat in PICKLE_WEIGHTS)]
        if not pickled:
            raise ImportModelError(f"{directory} holds no weights (*.safetensors)", exit_code=ExitCode.USAGE)
        if not allow_pickle:
            raise ImportModelError(
                "the weights are only in pickle format (.bin), which can run code when loaded",
                hint="add --allow-pickle if you trust the source",
                exit_code=ExitCode.USAGE,
            )


def _selected(directory: Path, allow_pickle: bool, trust_remote_code: bool) -> list[Path]:
    """The files to import. With a sharded checkpoint, exactly the shards its index names
    (each must be there); without one, every top-level *.safetensors."""
    patterns = NEEDED_FILES + (PICKLE_WEIGHTS if allow_pickle else []) + (["*.py"] if trust_remote_code else [])
    chosen = [p for p in sorted(directory.iterdir()) if p.is_file() and any(fnmatch(p.name, pat) for pat in patterns)]
    index = _json_or_empty(directory / "model.safetensors.index.json")
    if "weight_map" in index:
        shards = set(index["weight_map"].values())
        missing = sorted(shard for shard in shards if not (directory / shard).is_file())
        if missing:
            raise ImportModelError(
                f"{directory} lacks shards its index names: {', '.join(missing)}",
                hint="download the model again",
                exit_code=ExitCode.USAGE,
            )
        chosen = [p for p in chosen if not p.name.endswith(".safetensors") or p.name in shards]
    return chosen


def _json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        raise ImportModelError(f"{path} is not readable JSON ({err})", exit_code=ExitCode.USAGE) from err
    return data if isinstance(data, dict) else {}


def _tokenizer_class(directory: Path) -> str | None:
    config = _json_or_empty(directory / "tokenizer_config.json")
    if "tokenizer_class" in config:
        return config["tokenizer_class"]
    tokenizer = _json_or_empty(directory / "tokenizer.json")
    if tokenizer.get("type") == "char":  # the custom Transformer's vocabulary
        return f"char:{len(tokenizer.get('chars', []))}"
    return None


def _product(shape: Iterable[int]) -> int:
    result = 1
    for dim in shape:
        result *= dim
    return result
