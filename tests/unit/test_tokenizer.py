import pytest
import torch

from trainer.data.char_tokenizer import CharTokenizer


def test_vocab_is_sorted_set_of_corpus_chars():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.identifier == f"char:{tok.vocab_size}"


@pytest.mark.parametrize("text", ["hello world", "naïve café — ünïcödé"])
def test_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == torch.int64 and len(ids) == len(text)
    assert tok.decode(ids) == text


def test_ascii_fast_path_matches_loop_with_non_ascii_vocab():
    tok = CharTokenizer.from_text("abc é")
    assert tok.encode("cab").tolist() == [tok.chars.index(c) for c in "cab"]


def test_unknown_character_is_reported():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(KeyError, match="z"):
        tok.encode("abz")
    assert tok.unknown_chars("xyzab") == ["x", "y", "z"]


def test_save_load(tmp_path):
    tok = CharTokenizer.from_text("some text\nwith lines")
    tok.save(tmp_path / "tokenizer.json")
    assert CharTokenizer.load(tmp_path / "tokenizer.json").chars == tok.chars
