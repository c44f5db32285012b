"""Tokenized data on disk, memory-mapped: tokenize once, read any size without holding it.

A cache entry is a directory ``<cache root>/tokens/<key>/`` holding:

- ``tokens.bin``: every example's token ids, one after the other, in the smallest unsigned
  type the vocabulary fits (uint8 for a character vocabulary of up to 256, uint16, else
  uint32: 1, 2 or 4 bytes a token instead of the 8 of an int64 tensor);
- ``offsets.npy``: where each example starts (int64, one more entry than examples);
- ``mask.bin`` (completion and chat data): one byte per token, 1 where the token is a target
  the loss counts (the response and its EOS), 0 where it is prompt, system or user text;
- ``meta.json``: what went in (the key's fields) and what came out (counts, the format).

The key is the sha256 of everything that decides the tokens: the data's sha256, the
tokenizer's fingerprint, the chat template's sha256 and the format settings. An entry is
written to a hidden sibling directory and renamed into place under a file lock, so a
killed or failed tokenization leaves nothing that looks complete, and two runs that need
the same entry tokenize once. Training windows are views into the memory map: a run's
memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from trainer.data.cache_location import cache_root

CACHE_VERSION = 1
TOKENS_FILE, OFFSETS_FILE, MASK_FILE, META_FILE = "tokens.bin", "offsets.npy", "mask.bin", "meta.json"


@dataclass(frozen=True)
class TokenizedData:
    directory: Path
    tokens: np.ndarray  # memory-mapped, read-only
    offsets: np.ndarray
    mask: np.ndarray | None  # memory-mapped; None: every token is a target
    meta: dict[str, Any]

    @property
    def num_examples(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.tokens[start:end], None if self.mask is None else self.mask[start:end]


class TokenWriter:
    """Appends examples to the files of a cache entry being built."""

    def __init__(self, directory: Path, vocab_size: int, with_mask: bool):
        self.dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if vocab_size <= np.iinfo(t).max + 1)
        self._tokens = (directory / TOKENS_FILE).open("wb")
        self._mask = (directory / MASK_FILE).open("wb") if with_mask else None
        self._offsets = [0]
        self._open_length = 0  # tokens of the example being appended to
        self.target_tokens = 0

    def extend(self, ids, mask=None) -> None:
        """Append ``ids`` (and their mask) to the example being written."""
        ids = np.asarray(ids, dtype=self.dtype)
        self._tokens.write(ids.tobytes())
        if self._mask is not None:
            flags = np.asarray(mask, dtype=np.uint8)
            self._mask.write(flags.tobytes())
            self.target_tokens += int(flags.sum())
        else:
            self.target_tokens += len(ids)
        self._open_length += len(ids)

    def end_example(self) -> None:
        self._offsets.append(self._offsets[-1] + self._open_length)
        self._open_length = 0

    def add(self, ids, mask=None) -> None:
        self.extend(ids, mask)
        self.end_example()

    @property
    def examples(self) -> int:
        return len(self._offsets) - 1

    @property
    def tokens(self) -> int:
        return self._offsets[-1] + self._open_length

    def close(self, directory: Path) -> None:
        self._tokens.close()
        if self._mask is not None:
            self._mask.close()
        np.save(directory / OFFSETS_FILE, np.asarray(self._offsets, dtype=np.int64))


def cache_key(fields: dict[str, Any]) -> str:
    canonical = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def tokenized(
    fields: dict[str, Any], vocab_size: int, with_mask: bool, build: Callable[[TokenWriter], dict[str, Any]]
) -> tuple[TokenizedData, bool]:
    """The cache entry for ``fields``, built by ``build(writer)`` if it is not there yet (its
    return value joins the entry's meta). Returns the entry and whether it was found."""
    root = cache_root() / "tokens"
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(fields)
    final = root / key
    with FileLock(str(root / f"{key}.lock")):
        if (final / META_FILE).is_file():
            return open_entry(final), True
        partial = root / f".partial-{key}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            writer = TokenWriter(partial, vocab_size, with_mask)
            try:
                produced = build(writer)
            finally:
                writer.close(partial)
            meta = {
                "key": key,
                "fields": fields,
                "dtype": np.dtype(writer.dtype).name,
                "examples": writer.examples,
                "tokens": writer.tokens,
                "target_tokens": writer.target_tokens,
                **produced,
            }
            # meta.json last: an entry without it was never finished and is never read.
            (partial / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # nothing is cached from a failed read
            raise
    return open_entry(final), False


def open_entry(directory: Path) -> TokenizedData:
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    dtype = np.dtype(meta["dtype"])
    tokens = _memmap(directory / TOKENS_FILE, dtype)
    mask_path = directory / MASK_FILE
    mask = _memmap(mask_path, np.uint8) if mask_path.is_file() else None
    offsets = np.load(directory / OFFSETS_FILE)
    return TokenizedData(directory, tokens, offsets, mask, meta)


def _memmap(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
