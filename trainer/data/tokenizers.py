"""Tokenizers beside the character one: a Hugging Face model's own, and choosing which to use.

Every tokenizer the Trainer sees has the same small surface as ``CharTokenizer``: ``encode``
(text to an int64 tensor), ``decode``, ``vocab_size``, ``identifier`` and
``save_pretrained(directory)``, so the loop, the data pipeline and the checkpoints never ask
which kind they hold. A checkpoint's tokenizer files tell ``load_tokenizer`` the kind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from trainer.data.char_tokenizer import CHAR_TOKENIZER_TYPE, CharTokenizer
from trainer.errors import UsageError

TOKENIZER_FILE = "tokenizer.json"


class HFTokenizer:
    """A transformers tokenizer behind the CharTokenizer surface."""

    def __init__(self, tokenizer, name: str):
        self.tokenizer = tokenizer
        self.name = name  # where it came from: a registry name or a path

    @classmethod
    def from_directory(cls, directory: Path, name: str | None = None) -> HFTokenizer:
        from transformers import AutoTokenizer

        refuse_custom_code(directory)
        return cls(AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False), name or str(directory))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)  # the base vocabulary plus added tokens

    @property
    def identifier(self) -> str:
        return f"hf:{type(self.tokenizer).__name__}:{self.vocab_size}"

    @property
    def start_id(self) -> int:
        """The token an empty prompt starts from."""
        for candidate in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return candidate
        return 0

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def fingerprint(self) -> str:
        """What decides its ids (a tokenized-data cache key part): a fast tokenizer's whole
        definition, else its vocabulary, with the special tokens either way."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        definition = backend.to_str() if backend is not None else json.dumps(self.tokenizer.get_vocab(), sort_keys=True)
        specials = json.dumps(self.tokenizer.special_tokens_map, sort_keys=True, default=str)
        return hashlib.sha256(f"{definition}\0{specials}".encode()).hexdigest()

    @property
    def start_ids(self) -> list[int]:
        """What the tokenizer puts before a text of its own accord (Llama's BOS; nothing for
        Qwen or GPT-2): each example starts with it, as in pre-training."""
        with_specials = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        return with_specials[: len(with_specials) - len(plain)] if with_specials[-len(plain) :] == plain else []

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once: a fast tokenizer spreads a batch over the CPU's cores, and its
        ``encode_batch_fast`` (tokenizers 0.21 and later) skips the character offsets that
        nothing here reads, about twice as fast again."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False, verbose=False, return_attention_mask=False)["input_ids"]

    def encode(self, text: str) -> torch.Tensor:
        # No BOS/EOS: training windows are cut from one long stream of text. verbose=False:
        # a corpus is far longer than model_max_length on purpose, so that warning is noise.
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids)

    def save_pretrained(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


def refuse_custom_code(directory: Path) -> None:
    """A model or tokenizer whose files name code of its own (``auto_map``) is refused before
    transformers reads it: with trust_remote_code left unset, transformers would ask on the
    terminal whether to run that code (or load a built-in class in its place); explicitly
    False, it raises several lines. Either way, one line here instead."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            settings = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # missing or unreadable: transformers says what is wrong with it
        if isinstance(settings, dict) and "auto_map" in settings:
            raise UsageError(
                f"{directory / name} asks to run code of its own (auto_map); lmrunner never runs a model's code",
                hint="fine-tune a model that transformers supports as it is (Qwen, Llama, Mistral, GPT-2, ...)",
            )


def load_tokenizer(directory: Path, name: str | None = None) -> CharTokenizer | HFTokenizer:
    """The tokenizer saved in ``directory``: a character vocabulary or a Hugging Face tokenizer."""
    path = directory / TOKENIZER_FILE
    if path.is_file():
        try:
            kind = json.loads(path.read_text(encoding="utf-8")).get("type")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind == CHAR_TOKENIZER_TYPE:
            return CharTokenizer.load(path)
    return HFTokenizer.from_directory(directory, name)
