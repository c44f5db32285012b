"""Shared fixtures: a small real-text corpus and the arguments of a tiny, fast model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "main.py"

# A model small enough that a step takes milliseconds on one CPU core.
TINY_MODEL = ["n_layers=2", "d_model=32", "n_heads=2", "d_ff=64", "max_seq_len=32", "batch_size=8", "dropout=0.1"]


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """60 kB of real English: the start of the built-in corpus."""
    from trainer.corpus import builtin_corpus

    return builtin_corpus()[:60_000]


@pytest.fixture
def corpus_file(tmp_path: Path, corpus_text: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


def run_main(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run main.py as a user would, in ``cwd`` (where outputs/ goes)."""
    full_env = {k: v for k, v in os.environ.items() if k != "LMRUNNER_DEBUG"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(MAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "outputs").glob("*/*") if p.is_dir())


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def step_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last record winning (a resume may repeat steps after a crash)."""
    return {e["step"]: e["loss"] for e in read_events(run_dir) if e["event"] == "step"}
