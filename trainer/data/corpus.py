"""Checking a text file while a run is planned, before a run directory exists.

``check_data_file`` reads the file through once, in chunks (so memory stays flat for any
size): a missing, unreadable, empty or non-UTF-8 file fails here with one line; the run
itself reads it again to tokenize (trainer/data/prepare.py).
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.text_stream import text_chunks
from trainer.errors import DataError


def check_data_file(data_path: str) -> int:
    """The file's length in characters, once it is known to be non-empty UTF-8 text."""
    path = Path(data_path)
    if not path.exists():
        raise DataError("data file not found", path=data_path, hint="check the path given to --data or data_path")
    if not path.is_file():
        raise DataError("is not a regular file", path=data_path, hint="point --data at a UTF-8 text file")
    characters, blank = 0, True
    try:
        for chunk in text_chunks(path):
            characters += len(chunk)
            blank = blank and not chunk.strip()
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path=data_path) from err
    if blank:
        raise DataError("data file is empty", path=data_path, hint="give a file with training text in it")
    return characters
