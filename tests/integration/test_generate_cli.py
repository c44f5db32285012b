"""generate SOURCE: every kind of source and model, seeds, JSON, streaming, stdin, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import MAIN, REPO

pytest.importorskip("transformers")


def sources(char_run, hf_run):
    """(SOURCE, kind, the checkpoint it resolves to) for both models and all three kinds."""
    return [
        (char_run.checkpoint, "checkpoint", char_run.checkpoint),
        (char_run.run_dir, "run directory", char_run.checkpoint),
        ("char-model", "registry model", None),
        (hf_run.checkpoint, "checkpoint", hf_run.checkpoint),
        (hf_run.run_dir, "run directory", hf_run.checkpoint),
        ("tiny-qwen", "registry model", None),
    ]


def generate_json(lmrunner, registry, source, *options):
    code, out, err = lmrunner("generate", source, "--registry-dir", registry.root, "--json", *options)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def test_every_kind_of_source_of_both_models(lmrunner, use_registry, char_run, hf_run):
    for source, kind, resolved in sources(char_run, hf_run):
        (record,), err = generate_json(lmrunner, use_registry, source, "--prompt", "The ", "--seed", "3")
        assert record["source_kind"] == kind and record["source"] == str(source)
        if resolved is not None:
            assert record["source_resolved"] == str(resolved)
        else:
            assert record["source_resolved"] == str(use_registry.model_dir(use_registry.get(source)))
        assert record["prompt"] == "The " and record["prompt_tokens"] >= 1 and record["seed"] == 3
        assert 1 <= record["new_tokens"] <= 200 and record["tokens_per_s"] > 0 and record["text"]
        assert f"loaded {kind}" in err and "on cpu, fp32" in err


@pytest.mark.parametrize("model", ["char-model", "tiny-qwen"])
def test_the_same_seed_gives_the_same_text_and_sample_i_is_seed_plus_i(lmrunner, use_registry, model):
    options = ("--prompt", "The ", "--max-new-tokens", "20", "--top-k", "50", "--top-p", "0.95")
    first, _ = generate_json(lmrunner, use_registry, model, *options, "--seed", "7", "--num-samples", "3")
    again, _ = generate_json(lmrunner, use_registry, model, *options, "--seed", "7", "--num-samples", "3")
    assert [r["text"] for r in first] == [r["text"] for r in again]
    assert len({r["text"] for r in first}) == 3 and [r["seed"] for r in first] == [7, 8, 9]
    (third_alone,), _ = generate_json(lmrunner, use_registry, model, *options, "--seed", "9")
    assert third_alone["text"] == first[2]["text"]


@pytest.mark.parametrize("model", ["char-model", "tiny-qwen"])
def test_streamed_text_is_the_prompt_and_the_sample_with_diagnostics_apart(lmrunner, use_registry, model):
    (record,), _ = generate_json(lmrunner, use_registry, model, "--prompt", "It is", "--seed", "1")
    code, out, err = lmrunner(
        "generate", model, "--registry-dir", use_registry.root, "--prompt", "It is", "--seed", "1"
    )
    assert code == 0 and out == "It is" + record["text"] + "\n"
    assert "sample 1/1: seed 1" in err and "tokens/s" in err and record["text"] not in err
    code, quiet, _ = lmrunner(
        "generate", model, "--registry-dir", use_registry.root, "--prompt", "It is", "--seed", "1", "--no-stream"
    )
    assert code == 0 and quiet == out


def test_greedy_decoding_ignores_the_seed(lmrunner, use_registry):
    texts = {
        generate_json(lmrunner, use_registry, "char-model", "--prompt", "a", "--temperature", "0", "--seed", seed)[0][
            0
        ]["text"]
        for seed in ("1", "2")
    }
    assert len(texts) == 1


def test_max_new_tokens_beyond_the_positions_is_capped_and_said(lmrunner, use_registry):
    (record,), err = generate_json(lmrunner, use_registry, "char-model", "--prompt", "The ", "--max-new-tokens", "500")
    assert record["new_tokens"] == 32 - 4  # max_seq_len 32, a 4-character prompt
    assert "--max-new-tokens 500 capped at 28: the model has 32 positions and the prompt takes 4" in err


def generate_process(cwd, registry, *args, stdin: str):
    env = {k: v for k, v in os.environ.items() if k != "LMRUNNER_DEBUG"}
    env["LMRUNNER_HOME"] = str(registry.root)
    return subprocess.run(
        [sys.executable, str(MAIN), "generate", *args], cwd=cwd, input=stdin, capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip


def test_prompt_from_stdin_and_file_as_a_user_runs_it(tmp_path, use_registry, char_run):
    """A real process: stdin read when it is not a terminal, text on stdout, the rest on stderr."""
    piped = generate_process(
        tmp_path, use_registry, "char-model", "--seed", "5", "--max-new-tokens", "12", stdin="The \n"
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("The ") and len(piped.stdout) == len("The ") + 12 + 1  # the newline after it
    assert "loaded registry model char-model" in piped.stderr and "seed 5" in piped.stderr
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("The \n", encoding="utf-8")
    from_file = generate_process(
        tmp_path, use_registry, "char-model", "--seed", "5", "--max-new-tokens", "12", "--prompt-file", prompt_file,
        stdin="ignored, as a prompt file is given",
    )  # fmt: skip
    assert from_file.stdout == piped.stdout


def test_a_run_directory_passes_over_a_damaged_newest_checkpoint_and_says_so(lmrunner, tmp_path, char_run):
    run_copy = tmp_path / "run"
    shutil.copytree(char_run.run_dir, run_copy)
    weights = run_copy / "checkpoints" / "step-00000120" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    code, out, err = lmrunner("generate", run_copy, "--prompt", "The ", "--json", "--seed", "1")
    assert code == 0 and json.loads(out)["source_resolved"].endswith("step-00000060")
    assert "passed over" in err and "model.safetensors does not match its sha256" in err
    assert (run_copy / "checkpoints" / "step-00000120").is_dir()  # using a model moves nothing


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_source_that_is_nothing_names_the_three_kinds_and_the_registry_models(lmrunner, use_registry, char_run):
    code, _, err = lmrunner("generate", "char-modle", "--registry-dir", use_registry.root, "--prompt", "a")
    line = one_error_line(err)
    assert code == 2 and "a checkpoint directory" in line and "a run directory" in line
    assert "a registry model name" in line and "(did you mean 'char-model'?)" in line
    assert "registry models: char-model, tiny-chat, tiny-qwen" in line


def test_a_directory_that_is_no_source_says_what_would_be(lmrunner, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = lmrunner("generate", tmp_path / "empty", "--prompt", "a")
    assert code == 2 and "exists but is not a checkpoint directory" in one_error_line(err)


def test_a_damaged_checkpoint_is_one_line_naming_the_file(lmrunner, tmp_path, char_run):
    damaged = tmp_path / "step-00000120"
    shutil.copytree(char_run.checkpoint, damaged)
    (damaged / "tokenizer.json").write_text('{"type": "char", "chars": ["x"]}')
    code, _, err = lmrunner("generate", damaged, "--prompt", "a")
    line = one_error_line(err)
    assert code == 2 and "tokenizer.json" in line and str(damaged) in line


def test_prompt_characters_outside_the_vocabulary_are_named(lmrunner, use_registry):
    code, _, err = lmrunner("generate", "char-model", "--registry-dir", use_registry.root, "--prompt", "The €☃ end")
    assert code == 2 and "characters the model's vocabulary lacks: '€☃'" in one_error_line(err)


@pytest.mark.parametrize("top_p", ["0", "1.5", "-0.1", "nan", "high"])
def test_top_p_outside_0_1_is_refused_before_anything_loads(lmrunner, top_p):
    code, _, err = lmrunner("generate", "anything", "--top-p", top_p)
    assert code == 2 and "argument --top-p: must be" in one_error_line(err)


def test_help_of_the_model_commands_imports_no_torch(tmp_path):
    for command in ("generate", "chat", "evaluate"):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(MAIN), command, "--help"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0 and f"{command} [-h]" in result.stdout, result.stderr
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
        assert "torch" not in imported and "transformers" not in imported, command


def test_the_readmes_three_lines_of_python_write_what_generate_writes(lmrunner, char_run, capsys):
    readme = (REPO / "README.md").read_text()
    block = readme.split("**The custom model in Python**")[1].split("```python\n")[1].split("```")[0]
    assert len([line for line in block.splitlines() if line]) == 3
    exec(block.replace("outputs/DATE/TIME", str(char_run.run_dir)), {})
    printed = capsys.readouterr().out
    code, out, _ = lmrunner("generate", char_run.run_dir, "--prompt", "The ", "--max-new-tokens", "100", "--seed", "1")
    assert code == 0 and printed == out and len(printed) == 32 + 1  # the model's 32 positions, then a newline


@pytest.mark.parametrize("model", ["char-model", "tiny-qwen"])
def test_bf16_weights_generate_the_same_text_for_the_same_seed(lmrunner, use_registry, char_run, model):
    options = ("--prompt", "The ", "--seed", "2", "--precision", "bf16", "--max-new-tokens", "16")
    (first,), err = generate_json(lmrunner, use_registry, model, *options)
    (again,), _ = generate_json(lmrunner, use_registry, model, *options)
    assert first["text"] == again["text"] and first["new_tokens"] >= 1 and "on cpu, bf16" in err


def test_a_device_that_is_not_here_is_one_line(lmrunner, use_registry, char_run):
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    code, _, err = lmrunner("generate", "char-model", "--registry-dir", use_registry.root, "--device", "cuda")
    assert code == 2 and "CUDA is not available here" in one_error_line(err)


def test_a_reader_that_leaves_while_text_streams_ends_generate_quietly(tmp_path, use_registry, char_run):
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first token, as head -c 1 is soon after
    env = {k: v for k, v in os.environ.items() if k != "LMRUNNER_DEBUG"}
    try:
        result = subprocess.run(
            [sys.executable, str(MAIN), "generate", "char-model", "--prompt", "The ", "--seed", "1"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            timeout=120, env={**env, "LMRUNNER_HOME": str(use_registry.root)},
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 141 and "error" not in result.stderr and "Traceback" not in result.stderr
