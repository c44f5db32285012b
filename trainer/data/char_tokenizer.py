"""Character-level tokenizer. Its vocabulary comes from the corpus and travels inside every
checkpoint as ``tokenizer.json``; it is never looked up anywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHAR_TOKENIZER_TYPE = "char"


class CharTokenizer:
    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary has duplicate characters")
        self.chars = list(chars)
        self._index = {ch: i for i, ch in enumerate(self.chars)}

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

    def encode(self, text: str) -> torch.Tensor:
        """Token ids as an int64 tensor; raises KeyError on a character not in the vocabulary."""
        missing = self.unknown_chars(text)
        if missing:
            raise KeyError(f"characters not in the vocabulary: {''.join(missing)!r}")
        # An ASCII text goes through a byte lookup table, ~50x faster than a Python loop on
        # a 1 MB corpus; other text takes the loop (and the empty text, which frombuffer refuses).
        if text.isascii() and text:
            table = torch.zeros(128, dtype=torch.int64)
            for ch, i in self._index.items():
                if ord(ch) < 128:
                    table[ord(ch)] = i
            raw = torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8)
            return table[raw.long()]
        return torch.tensor([self._index[ch] for ch in text], dtype=torch.int64)

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
