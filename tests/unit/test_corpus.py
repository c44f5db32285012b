import hashlib

from trainer.config.schema import TrainingConfig
from trainer.data.builtin_corpus import MIN_CORPUS_CHARS, assemble_corpus, builtin_corpus
from trainer.data.prepare import open_data


def test_builtin_corpus_is_big_and_deterministic(tmp_path, monkeypatch):
    text = builtin_corpus()
    assert len(text.encode("utf-8")) >= 1_000_000 and len(text) >= MIN_CORPUS_CHARS
    # A fresh assembly (no cache) gives the same text.
    monkeypatch.setenv("LMRUNNER_CACHE", str(tmp_path))
    assert hashlib.sha256(builtin_corpus().encode()).digest() == hashlib.sha256(text.encode()).digest()
    assert any(tmp_path.iterdir())  # and it was cached


def test_builtin_corpus_is_prose():
    text = builtin_corpus()
    words = text.split()
    assert sum(w.isalpha() for w in words) / len(words) > 0.5


def test_assemble_reads_docstrings_without_importing(tmp_path):
    (tmp_path / "mod.py").write_text(
        '"""Module doc."""\nraise SystemExit("imported!")\ndef f():\n    """Function doc."""\n'
    )
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "skip.py").write_text('"""Skipped."""\n')
    text = assemble_corpus(tmp_path)
    assert "Module doc." in text and "Function doc." in text and "Skipped." not in text


def test_the_default_data_is_the_builtin_corpus_with_the_sha256_of_its_text():
    data = open_data(TrainingConfig())
    assert data.label == "builtin:python-docs"
    assert data.sha256 == hashlib.sha256(builtin_corpus().encode()).hexdigest()
