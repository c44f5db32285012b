"""Character-level tokenizer. Its vocabulary comes from the corpus and travels inside every
checkpoint as ``tokenizer.json``; it is never looked up anywhere else."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

CHAR_TOKENIZER_TYPE = "char"


class CharTokenizer:
    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary has duplicate characters")
        self.chars = list(chars)
        self._index = {ch: i for i, ch in enumerate(self.chars)}
        # Code points in ascending order and the id of each: a text's code points find
        # their ids by binary search, in numpy, at any size.
        codepoints = np.array([ord(ch) for ch in self.chars], dtype=np.int64)
        self._order = np.argsort(codepoints, kind="stable")
        self._sorted_codepoints = codepoints[self._order]
        # ASCII text (the common case) goes through a byte table instead: one lookup a byte.
        self._ascii = np.full(128, -1, dtype=np.int64)
        for i, ch in enumerate(self.chars):
            if ord(ch) < 128:
                self._ascii[ord(ch)] = i

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        # Sorted, so the same text always gives the same ids.
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def identifier(self) -> str:
        """What checkpoints and run metadata record: the kind and the vocabulary size."""
        return f"{CHAR_TOKENIZER_TYPE}:{self.vocab_size}"

    def unknown_chars(self, text: str) -> list[str]:
        return sorted(set(text) - self._index.keys())

    @property
    def fingerprint(self) -> str:
        """What decides its ids: the vocabulary, in order (a tokenized-data cache key part)."""
        return hashlib.sha256(json.dumps(self.chars, ensure_ascii=False).encode()).hexdigest()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids as an int64 array; raises KeyError on a character not in the vocabulary."""
        if text.isascii():
            ids = self._ascii[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
            if len(ids) and ids.min() < 0:
                raise KeyError(f"characters not in the vocabulary: {''.join(self.unknown_chars(text))!r}")
            return ids
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        where = np.searchsorted(self._sorted_codepoints, codepoints).clip(max=len(self.chars) - 1)
        if len(codepoints) and not np.array_equal(self._sorted_codepoints[where], codepoints):
            raise KeyError(f"characters not in the vocabulary: {''.join(self.unknown_chars(text))!r}")
        return self._order[where]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode_array(text) for text in texts]

    # A character vocabulary puts nothing before a text.
    start_ids: list[int] = []

    def encode(self, text: str) -> torch.Tensor:
        """Token ids as an int64 tensor; raises KeyError on a character not in the vocabulary."""
        return torch.from_numpy(self.encode_array(text))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> dict:
        return {"type": CHAR_TOKENIZER_TYPE, "chars": self.chars}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    def save_pretrained(self, directory: Path) -> None:
        """The same call as a Hugging Face tokenizer's: the vocabulary as ``tokenizer.json``."""
        self.save(directory / "tokenizer.json")

    # An empty prompt starts from the first vocabulary entry; a character vocabulary has no
    # end-of-text token, so sampling always runs to its full length.
    start_id = 0
    eos_id = None

    @classmethod
    def load(cls, path: Path) -> CharTokenizer:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("type") != CHAR_TOKENIZER_TYPE:
            raise ValueError(f"not a char tokenizer: type {data.get('type')!r}")
        return cls(data["chars"])
