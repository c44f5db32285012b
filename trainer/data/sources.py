"""What ``data_path`` names, and the identity of what it holds.

A data path is one of:

- nothing (null): the built-in corpus, a text (trainer/data/builtin_corpus.py);
- a text file (``.txt``, or any file without a table suffix), or a directory of them;
- a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, or a directory of files of one such kind;
- a directory written by ``datasets.Dataset.save_to_disk``;
- a Hugging Face Hub dataset id (``owner/name``), read through the ``datasets`` cache
  (``HF_HUB_OFFLINE=1`` reads that cache alone).

``fingerprint`` is the sha256 that checkpoints record and a resume compares: of the bytes of
the files (for one text file exactly the sha256 of its text, as lmrunner always recorded), or,
for a Hub dataset, of its id and the fingerprint ``datasets`` gives the cached copy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from trainer.data.builtin_corpus import BUILTIN_CORPUS_LABEL, builtin_corpus_file
from trainer.errors import DataError
from trainer.files import sha256_of

# File suffixes read as tables through `datasets`, by the builder that reads them.
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class DataSource:
    kind: str  # "text" | "table" | "saved" | "hub"
    label: str  # what the user gave (or the built-in corpus's label), for messages and metadata
    files: tuple[Path, ...] = ()  # the files read, in order (text and table kinds)
    builder: str | None = None  # json | csv | parquet, for the table kind

    @property
    def is_text(self) -> bool:
        return self.kind == "text"


def resolve_source(data_path: str | None) -> DataSource:
    """What ``data_path`` names; a path that does not exist and is no Hub id is a DataError."""
    if data_path is None:
        return DataSource("text", BUILTIN_CORPUS_LABEL, (builtin_corpus_file(),))
    path = Path(data_path)
    if path.is_file():
        builder = TABLE_SUFFIXES.get(path.suffix.lower())
        return DataSource("table" if builder else "text", data_path, (path,), builder)
    if path.is_dir():
        return _directory_source(path, data_path)
    if _looks_like_hub_id(data_path):
        return DataSource("hub", data_path)
    raise DataError(
        "data file not found",
        path=data_path,
        hint="check the path given to --data or data_path (a file, a directory, or a Hub dataset id owner/name)",
    )


def _directory_source(path: Path, label: str) -> DataSource:
    if any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS):
        return DataSource("saved", label, tuple(sorted(p for p in path.rglob("*") if p.is_file())))
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    builders = {TABLE_SUFFIXES.get(p.suffix.lower(), "text") for p in files}
    if not files:
        raise DataError("the directory holds no data files", path=label, hint="point data_path at a directory of data")
    if len(builders) > 1:
        kinds = ", ".join(sorted(builders))
        raise DataError(
            f"the directory mixes kinds of data files ({kinds})",
            path=label,
            hint="keep one kind per directory (.jsonl, .json, .csv, .parquet or text files)",
        )
    (builder,) = builders
    if builder == "text":
        return DataSource("text", label, tuple(files))
    return DataSource("table", label, tuple(files), builder)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_hub_id(text: str) -> bool:
    """owner/name, unless it reads as a local path: a file suffix (data.txt), or an owner that
    is a folder here (data/train, when data/ exists, is a path that is missing)."""
    owner, _, name = text.partition("/")
    has_suffix = Path(name).suffix.lower() in (*TABLE_SUFFIXES, ".txt")
    return bool(_HUB_ID.match(text)) and not has_suffix and not Path(owner).is_dir()


def fingerprint(source: DataSource, hub_fingerprint: str | None = None) -> str:
    """The sha256 a run records for its data (see the module's docstring)."""
    if source.kind == "hub":
        return hashlib.sha256(f"hub:{source.label}:{hub_fingerprint}".encode()).hexdigest()
    if len(source.files) == 1 and source.kind in ("text", "table"):
        return sha256_of(source.files[0])
    root = Path(source.label) if source.kind in ("saved",) or Path(source.label).is_dir() else None
    digest = hashlib.sha256()
    for file in source.files:
        name = file.relative_to(root) if root else file.name
        digest.update(f"{name}\0{sha256_of(file)}\n".encode())
    return digest.hexdigest()
