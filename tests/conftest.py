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


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tokenized data and the built-in corpus go to a cache of the test session's own (the
    subprocesses the tests start inherit it), not to the user's ~/.cache/lmrunner."""
    previous = os.environ.get("LMRUNNER_CACHE")
    os.environ["LMRUNNER_CACHE"] = str(tmp_path_factory.mktemp("lmrunner-cache"))
    yield Path(os.environ["LMRUNNER_CACHE"])
    if previous is None:
        os.environ.pop("LMRUNNER_CACHE", None)
    else:
        os.environ["LMRUNNER_CACHE"] = previous


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """60 kB of real English: the start of the built-in corpus."""
    from trainer.data.builtin_corpus import builtin_corpus

    return builtin_corpus()[:60_000]


@pytest.fixture
def corpus_file(tmp_path: Path, corpus_text: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


def tiny_config(corpus_file, **changes):
    """A TrainingConfig of a tiny model on ``corpus_file``, with eval and sampling on."""
    from trainer.config.schema import TrainingConfig

    values = dict(
        n_layers=2,
        d_model=32,
        n_heads=2,
        d_ff=64,
        max_seq_len=32,
        batch_size=8,
        dropout=0.1,
        max_steps=12,
        seed=11,
        data_path=str(corpus_file),
        checkpoint_cadence=None,
        eval_cadence=4,
        eval_batches=2,
        sampling_cadence=6,
        sampling_max_length=20,
        warmup_steps=3,
    )
    values.update(changes)
    return TrainingConfig(**values)


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
    from trainer.run.events import read_events as read_event_file

    return read_event_file(run_dir / "events.jsonl")


def step_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last record winning (a resume may repeat steps after a crash)."""
    return {e["step"]: e["loss"] for e in read_events(run_dir) if e["event"] == "step"}


def rehash(checkpoint: Path) -> None:
    """Rewrite a checkpoint's manifest to match its files as they are now: what someone who
    tampers with a checkpoint and knows the format does, so that only deeper checks catch it."""
    from trainer.files import describe_files

    manifest_path = checkpoint / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.unlink()
    manifest["files"] = describe_files(checkpoint)
    manifest_path.write_text(json.dumps(manifest))


# ChatML, the template of Qwen's chat models, shortened: no default system prompt.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen(directory: Path, vocab_size: int = 320, chat: bool = False) -> Path:
    """A real Qwen2 causal LM in Hugging Face layout, small enough to build in a second, with
    a byte-level BPE tokenizer (Qwen's kind) trained on a slice of the built-in corpus. With
    ``chat``, the tokenizer has ChatML's special tokens and chat template."""
    transformers = pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from trainer.data.builtin_corpus import builtin_corpus

    specials = ["<|endoftext|>", *(["<|im_start|>", "<|im_end|>"] if chat else [])]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=specials,
        show_progress=False,
    )
    bpe.train_from_iterator([builtin_corpus()[:100_000]], trainer)
    learned = json.loads(bpe.to_str())["model"]
    tokenizer = transformers.Qwen2Tokenizer(
        vocab=learned["vocab"],
        merges=[tuple(m) for m in learned["merges"]],
        eos_token="<|endoftext|>",
        additional_special_tokens=specials[1:] or None,
    )
    if chat:
        tokenizer.chat_template = CHATML
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def serve_from_hub_cache(monkeypatch, hub: Path, model_dir: Path, repo_id: str) -> str:
    """Put ``model_dir`` in a Hugging Face cache at ``hub`` as ``repo_id`` and use that cache
    offline, as a machine that downloaded it before would: import-model REPO_ID then takes it
    from there, with its Hub id and revision. Returns the revision (a commit sha)."""
    import shutil

    import huggingface_hub.constants as constants

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return sha


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("hf") / "tiny-qwen")


@pytest.fixture(scope="session")
def tiny_chat_qwen_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("hf-chat") / "tiny-chat-qwen", chat=True)
