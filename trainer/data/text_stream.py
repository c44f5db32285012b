"""Text files read as a stream of chunks, for tokenizing (and a character vocabulary) at any size.

A chunk ends at the start of a line (a newline followed by a character that is not
whitespace): there byte-level BPE tokenizers (GPT-2, Qwen, Llama 3) start a new pre-token
anyway, so tokenizing chunk by chunk gives the ids that tokenizing the whole text in one
call would, without holding the text or its ids in memory at once. (A SentencePiece
tokenizer may tokenize the first word of a chunk differently.)
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from trainer.errors import DataError

CHUNK_BYTES = 1 << 20


def text_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry, offset = "", 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            text = carry + _decode(decoder, block, offset, path)
            offset += len(block)
            cut = _line_start_before_end(text)
            if cut == 0 and len(text) < 8 * chunk_bytes:
                carry = text  # one very long line so far: wait for its end, a little
                continue
            cut = cut or len(text)
            yield text[:cut]
            carry = text[cut:]
        text = carry + _decode(decoder, b"", offset, path, final=True)
    if text:
        yield text


def _line_start_before_end(text: str) -> int:
    """The last position that starts a line with a character that is not whitespace; 0: none."""
    position = text.rfind("\n")
    while position != -1 and (position + 1 >= len(text) or text[position + 1].isspace()):
        position = text.rfind("\n", 0, position)
    return position + 1


def _decode(decoder, block: bytes, offset: int, path: Path, final: bool = False) -> str:
    try:
        return decoder.decode(block, final=final)
    except UnicodeDecodeError as err:
        raise DataError(
            f"is not UTF-8 text (invalid byte at offset {offset + err.start})",
            path=str(path),
            hint="convert it, e.g. iconv -f latin1 -t utf-8 IN > OUT",
        ) from err


def characters_of(paths: tuple[Path, ...]) -> list[str]:
    """Every character the files hold, sorted: a character vocabulary, read in one pass."""
    seen: set[str] = set()
    for path in paths:
        for chunk in text_chunks(path):
            seen.update(chunk)
    return sorted(seen)
