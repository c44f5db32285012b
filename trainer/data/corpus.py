"""The text a run trains on: a file given with --data (data_path), or the built-in corpus.

``check_data_file`` is the cheap part (the path exists and is a file), run while planning, so
a wrong path fails before a run directory is made; ``load_corpus`` reads and decodes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from trainer.data.builtin_corpus import BUILTIN_CORPUS_LABEL, builtin_corpus
from trainer.errors import DataError


@dataclass(frozen=True)
class Corpus:
    text: str
    source: str  # the file path, or the built-in corpus label
    sha256: str


def load_corpus(data_path: str | None) -> Corpus:
    """The text at ``data_path``, or the built-in corpus when it is None."""
    if data_path is None:
        text = builtin_corpus()
        source = BUILTIN_CORPUS_LABEL
    else:
        text = _read_text_file(data_path)
        source = data_path
    return Corpus(text, source, hashlib.sha256(text.encode("utf-8")).hexdigest())


def check_data_file(data_path: str | None) -> None:
    """The cheap checks, so a run with a wrong path fails before it makes a run directory."""
    if data_path is None:
        return
    path = Path(data_path)
    if not path.exists():
        raise DataError("data file not found", path=data_path, hint="check the path given to --data or data_path")
    if not path.is_file():
        raise DataError("is not a regular file", path=data_path, hint="point --data at a UTF-8 text file")


def _read_text_file(data_path: str) -> str:
    check_data_file(data_path)
    path = Path(data_path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path=data_path) from err
    if not raw.strip():
        raise DataError("data file is empty", path=data_path, hint="give a file with training text in it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"is not UTF-8 text (invalid byte at offset {err.start})",
            path=data_path,
            hint="convert it, e.g. iconv -f latin1 -t utf-8 IN > OUT",
        ) from err
