"""The built-in default corpus: Python's own documentation, read from the running Python.

Every Python installation carries two bodies of English prose: the language reference
topics behind ``help()`` (``pydoc_data.topics``) and the docstrings of the standard
library. Together they are about 2 MB, need no network and no download, and are the same
text on every run of the same installation. Docstrings are read from the source files with
``ast`` (no module is imported, so nothing is executed), in sorted path order.

Assembling takes a few seconds, so the text is cached under ``$LMRUNNER_CACHE`` (default
``~/.cache/lmrunner``), keyed by the Python version and the standard library's location.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from trainer.data.cache_location import cache_root
from trainer.errors import DataError

BUILTIN_CORPUS_LABEL = "builtin:python-docs"
MIN_CORPUS_CHARS = 1_000_000
# Parts of the standard library that are tests, vendored tools or third-party packages.
_SKIPPED_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__"}


def builtin_corpus() -> str:
    cache = cache_path()
    try:
        return cache.read_text(encoding="utf-8")
    except OSError:
        pass
    text = assemble_corpus(Path(sysconfig.get_paths()["stdlib"]))
    if len(text) < MIN_CORPUS_CHARS:
        raise DataError(
            f"this Python installation ships only {len(text):,} characters of documentation "
            f"(the built-in corpus needs {MIN_CORPUS_CHARS:,})",
            path=BUILTIN_CORPUS_LABEL,
            hint="train on your own text with --data FILE",
        )
    _write_cache(cache, text)
    return text


def assemble_corpus(stdlib: Path) -> str:
    parts = _reference_topics()
    for source in sorted(stdlib.rglob("*.py")):
        if _SKIPPED_DIRS.intersection(source.relative_to(stdlib).parts):
            continue
        parts.extend(_docstrings(source))
    return "\n\n".join(parts) + "\n"


def _reference_topics() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some minimal installations leave pydoc_data out
        return []
    return [topics[name].strip() for name in sorted(topics)]


def _docstrings(source: Path) -> list[str]:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                found.append(doc)
    return found


def builtin_corpus_file() -> Path:
    """The built-in corpus as a file, so it is read like any text file: its cache, or, where
    the cache cannot be written, a private copy for this process."""
    path = cache_path()
    if path.is_file():
        return path
    text = builtin_corpus()
    if path.is_file():
        return path
    handle, name = tempfile.mkstemp(prefix="lmrunner-builtin-corpus-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    return Path(name)


def cache_path(root: Path | None = None) -> Path:
    """Where this Python's built-in corpus is cached (under ``root``, default the cache root)."""
    root = root or cache_root()
    key = hashlib.sha256(f"{sys.version}|{sysconfig.get_paths()['stdlib']}".encode()).hexdigest()[:16]
    return root / f"builtin-corpus-{key}.txt"


def _write_cache(path: Path, text: str) -> None:
    """Best effort: an unwritable cache only costs the next run a few seconds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass
