"""evaluate SOURCE --data FILE: loss, perplexity and bits per character, deterministic; --lm-eval."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest

from tests.conftest import MAIN

pytest.importorskip("transformers")


def evaluate_json(lmrunner, *args):
    code, out, err = lmrunner("evaluate", *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def texts(tmp_path_factory, corpus_text):
    """The first 4,000 characters the character model trained on, and the same characters shuffled."""
    folder = tmp_path_factory.mktemp("texts")
    own, shuffled = folder / "own.txt", folder / "shuffled.txt"
    own.write_text(corpus_text[:4000], encoding="utf-8")
    characters = list(corpus_text[:4000])
    random.Random(0).shuffle(characters)
    shuffled.write_text("".join(characters), encoding="utf-8")
    return own, shuffled


def test_a_model_knows_its_training_text_better_than_the_same_characters_shuffled(lmrunner, char_run, texts):
    own, shuffled = texts
    on_own = evaluate_json(lmrunner, char_run.run_dir, "--data", own)
    on_shuffled = evaluate_json(lmrunner, char_run.run_dir, "--data", shuffled)
    assert on_own["perplexity"] < on_shuffled["perplexity"] - 1, (on_own, on_shuffled)
    # Every character after the first is scored once, in windows of the 32 the model trained with.
    assert on_own["tokens"] == 3999 and on_own["max_seq_len"] == 32 and on_own["windows"] == math.ceil(3999 / 32)
    assert on_own["perplexity"] == pytest.approx(math.exp(on_own["loss"]))
    assert on_own["bits_per_character"] == pytest.approx(on_own["loss"] / math.log(2))
    assert on_own["source_resolved"] == str(char_run.checkpoint) and on_own["data"] == str(own)


def test_the_figures_are_the_same_on_every_run_and_readable_without_json(lmrunner, char_run, texts):
    own, _ = texts
    first = evaluate_json(lmrunner, char_run.checkpoint, "--data", own, "--batch-size", "3")
    assert first == evaluate_json(lmrunner, char_run.checkpoint, "--data", own, "--batch-size", "3")
    code, out, _ = lmrunner("evaluate", char_run.checkpoint, "--data", own, "--batch-size", "3")
    assert code == 0 and f"{first['loss']:.4f} nats/token" in out and f"{first['bits_per_character']:.4f}" in out
    assert "3,999 tokens scored in 125 windows of up to 32 tokens" in out


def test_a_hugging_face_model_by_name_has_no_bits_per_character_and_windows_are_capped(lmrunner, use_registry, texts):
    own, _ = texts
    registry = ("--registry-dir", use_registry.root)
    figures = evaluate_json(lmrunner, "tiny-qwen", "--data", own, *registry)
    assert "bits_per_character" not in figures and figures["max_seq_len"] == 128  # its positions
    assert figures["tokens"] > 0 and math.isfinite(figures["loss"])
    code, _, err = lmrunner("evaluate", "tiny-qwen", "--data", own, "--max-seq-len", "4096", *registry)
    assert code == 0 and "--max-seq-len 4096 capped at 128: the model has 128 positions" in err


def test_bad_data_is_one_line_and_exit_3(lmrunner, char_run, tmp_path):
    code, _, err = lmrunner("evaluate", char_run.checkpoint, "--data", tmp_path / "missing.txt")
    assert code == 3 and "data file not found" in err and "loaded" not in err  # before the model loads
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("The € and the ☃")
    code, _, err = lmrunner("evaluate", char_run.checkpoint, "--data", foreign)
    assert code == 3 and "characters not in the vocabulary: '€☃'" in err.splitlines()[-1]


def test_lm_eval_is_for_hugging_face_models_and_limit_for_lm_eval(lmrunner, char_run, texts):
    code, _, err = lmrunner("evaluate", char_run.checkpoint, "--lm-eval", "anything.yaml")
    assert code == 2 and "--lm-eval runs Hugging Face models" in err.splitlines()[-1]
    code, _, err = lmrunner("evaluate", char_run.checkpoint, "--data", texts[0], "--limit", "3")
    assert code == 2 and "--limit applies to --lm-eval" in err


TASK = """\
task: tiny_capitals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_runs_a_local_task_offline(tmp_path, use_registry):
    pytest.importorskip("lm_eval")
    data = tmp_path / "capitals.jsonl"
    rows = [("The capital of France is", [" Paris", " Rome"]), ("Two and two make", [" four", " five"])] * 3
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": 0}) + "\n" for q, c in rows))
    task = tmp_path / "capitals.yaml"
    task.write_text(TASK.format(data=data))
    env = {k: v for k, v in os.environ.items() if k != "LMRUNNER_DEBUG"}
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, str(MAIN), "evaluate", "tiny-qwen", "--lm-eval", str(task), "--limit", "4", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**env, **offline, "LMRUNNER_HOME": str(use_registry.root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)["lm_eval"]
    assert scores["tasks"] == ["tiny_capitals"] and scores["limit"] == 4
    accuracy = scores["results"]["tiny_capitals"]["acc,none"]
    assert 0 <= accuracy <= 1 and accuracy * 4 == round(accuracy * 4)  # a share of the 4 examples
