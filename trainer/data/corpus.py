"""The text a run trains on: a file given with --data (data_path), or the built-in corpus.

``check_data_file`` reads the text through once while the run is planned, so a missing,
empty or non-UTF-8 file fails before a run directory is made; ``load_corpus`` reads it for
the run.
"""

from __future__ import annotations

import codecs
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


def check_data_file(data_path: str | None) -> int:
    """Read the text through once, as a run will, and return its length in characters: a
    missing, unreadable, empty or non-UTF-8 file fails here, while planning, before a run
    directory exists. Reading streams in blocks, so memory stays flat for any size."""
    if data_path is None:
        return len(builtin_corpus())
    path = _existing_file(data_path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    characters, offset, blank = 0, 0, True
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                text = _decode(decoder, block, offset, data_path)
                characters, offset = characters + len(text), offset + len(block)
                blank = blank and not text.strip()
            _decode(decoder, b"", offset, data_path, final=True)
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path=data_path) from err
    if blank:
        raise DataError("data file is empty", path=data_path, hint="give a file with training text in it")
    return characters


def _existing_file(data_path: str) -> Path:
    path = Path(data_path)
    if not path.exists():
        raise DataError("data file not found", path=data_path, hint="check the path given to --data or data_path")
    if not path.is_file():
        raise DataError("is not a regular file", path=data_path, hint="point --data at a UTF-8 text file")
    return path


def _decode(decoder, block: bytes, offset: int, data_path: str, final: bool = False) -> str:
    try:
        return decoder.decode(block, final=final)
    except UnicodeDecodeError as err:
        raise DataError(
            f"is not UTF-8 text (invalid byte at offset {offset + err.start})",
            path=data_path,
            hint="convert it, e.g. iconv -f latin1 -t utf-8 IN > OUT",
        ) from err


def _read_text_file(data_path: str) -> str:
    path = _existing_file(data_path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path=data_path) from err
    if not raw.strip():
        raise DataError("data file is empty", path=data_path, hint="give a file with training text in it")
    decoder = codecs.getincrementaldecoder("utf-8")()
    return _decode(decoder, raw, 0, data_path, final=True)
