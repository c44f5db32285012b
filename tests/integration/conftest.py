"""Trained models to use (generate, chat, evaluate): a character model's run and a tiny Qwen
fine-tune, each with its checkpoints, and a registry holding both, made once per session."""

from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import tiny_config

# ChatML, as Qwen's instruct models write a conversation (short: the tiny model has 128 positions).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class UsableRun:
    run_dir: Path
    checkpoint: Path  # the newest
    registry_name: str


def train_in_process(config, run_dir: Path) -> Path:
    from trainer.run.execute import run_training

    run_dir.mkdir(parents=True)
    return run_training(config, run_dir, console=False).run_dir


@pytest.fixture(scope="session")
def use_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("use")


@pytest.fixture(scope="session")
def use_corpus(use_root, corpus_text) -> Path:
    path = use_root / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def use_registry(use_root, tiny_qwen_dir):
    from registry.hub import import_model
    from registry.store import Registry

    registry = Registry(use_root / "models")
    import_model(registry, str(tiny_qwen_dir), name="tiny-qwen")
    import_model(registry, str(chat_model_dir(tiny_qwen_dir, use_root / "tiny-chat")), name="tiny-chat")
    return registry


def chat_model_dir(model_dir: Path, target: Path) -> Path:
    """The tiny Qwen, its tokenizer given a chat template and <|im_start|>/<|im_end|> tokens
    (which the model embeds too)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(target))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    torch.manual_seed(0)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="session")
def char_run(use_root, use_corpus, use_registry) -> UsableRun:
    """A character model trained on the corpus for 120 steps, long enough to know more than
    which characters are frequent; checkpoints at 60 and 120."""
    from trainer.models.register import register_checkpoint

    config = tiny_config(
        use_corpus,
        max_steps=120,
        learning_rate=1e-2,
        dropout=0.0,
        checkpoint_cadence=60,
        eval_cadence=None,
        sampling_cadence=None,
    )
    run_dir = train_in_process(config, use_root / "char-run")
    checkpoint = run_dir / "checkpoints" / "step-00000120"
    register_checkpoint(use_registry, checkpoint, "char-model")
    return UsableRun(run_dir, checkpoint, "char-model")


@pytest.fixture(scope="session")
def hf_run(use_root, use_corpus, use_registry) -> UsableRun:
    """The tiny Qwen fine-tuned for 2 steps: a Hugging Face checkpoint in a run directory."""
    config = tiny_config(
        use_corpus,
        model_name="tiny-qwen",
        registry_dir=str(use_registry.root),
        max_seq_len=48,
        batch_size=4,
        max_steps=2,
        checkpoint_cadence=None,
        eval_cadence=None,
        sampling_cadence=None,
    )
    run_dir = train_in_process(config, use_root / "hf-run")
    return UsableRun(run_dir, run_dir / "checkpoints" / "step-00000002", "tiny-qwen")


@pytest.fixture
def lmrunner(capsys, monkeypatch, tmp_path):
    """Run the command line in this process (no torch import to wait for), with ``stdin`` as
    its standard input (not a terminal): (exit code, stdout, stderr)."""
    from trainer.cli.main import main

    monkeypatch.chdir(tmp_path)

    def run(*args, stdin: str = ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    # main() sets up the console: the "lmrunner" logger's own handler, no propagation to the
    # root logger. Left so, later tests' caplog (on the root logger) would see nothing.
    logger = logging.getLogger("lmrunner")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield run
    logger.handlers[:] = handlers
    logger.propagate = propagate
    logger.setLevel(level)
