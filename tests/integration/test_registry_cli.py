"""The registry subcommands end to end, as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import MAIN, REPO, read_events, run_dirs, run_main


def listed(cwd) -> list[str]:
    result = run_main("list-models", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [entry["name"] for entry in json.loads(result.stdout)]


def test_import_list_info_validate_delete(tmp_path, tiny_qwen_dir):
    result = run_main("import-model", str(tiny_qwen_dir), "--name", "tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = run_main("list-models", cwd=tmp_path).stdout
    assert "tiny" in table and "qwen" in table and "parameters" in table
    info = run_main("model-info", "tiny", cwd=tmp_path)
    assert info.returncode == 0 and "files present and intact" in info.stdout and "lineage: tiny" in info.stdout
    assert run_main("validate-registry", cwd=tmp_path).returncode == 0
    deleted = run_main("delete-model", "tiny", "--yes", cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert listed(tmp_path) == [] and not (tmp_path / "models" / "tiny").exists()
    assert run_main("validate-registry", cwd=tmp_path).returncode == 0
    assert "import-model" in run_main("list-models", cwd=tmp_path).stdout  # says how to start


def test_deleted_weights_make_validate_exit_5_naming_the_file(tmp_path, tiny_qwen_dir):
    assert run_main("import-model", str(tiny_qwen_dir), cwd=tmp_path).returncode == 0
    (tmp_path / "models" / "tiny-qwen" / "model.safetensors").unlink()
    result = run_main("validate-registry", cwd=tmp_path)
    assert result.returncode == 5
    assert "model.safetensors is missing" in result.stdout and result.stderr.startswith("error: ")
    assert "missing" in run_main("model-info", "tiny-qwen", cwd=tmp_path).stdout


@pytest.mark.parametrize("name", ["../evil", "a/b", "/tmp/abs", "", "X" * 70])
def test_bad_names_exit_2_and_write_nothing(tmp_path, tiny_qwen_dir, name):
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    result = run_main("import-model", str(tiny_qwen_dir), "--name", name, cwd=tmp_path)
    assert result.returncode == 2 and "invalid model name" in result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "evil").exists()
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before


def test_the_index_name_is_refused_and_the_registry_keeps_working(tmp_path, tiny_qwen_dir):
    result = run_main("import-model", str(tiny_qwen_dir), "--name", "registry.json", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "registry's own files" in result.stderr
    assert run_main("import-model", str(tiny_qwen_dir), cwd=tmp_path).returncode == 0
    assert listed(tmp_path) == ["tiny-qwen"]
    assert run_main("validate-registry", cwd=tmp_path).returncode == 0


def test_unknown_name_lists_and_suggests(tmp_path, tiny_qwen_dir):
    run_main("import-model", str(tiny_qwen_dir), cwd=tmp_path)
    result = run_main("model-info", "tiny-qwn", cwd=tmp_path)
    assert (
        result.returncode == 2
        and "did you mean 'tiny-qwen'" in result.stderr
        and "available: tiny-qwen" in result.stderr
    )


def test_hub_unreachable_is_one_line(tmp_path):
    result = run_main(
        "import-model",
        "acme/not-cached",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "not in the local cache" in result.stderr and "Traceback" not in result.stderr


def test_eight_concurrent_imports_all_register(tmp_path, tiny_qwen_dir):
    processes = [
        subprocess.Popen(
            [sys.executable, str(MAIN), "import-model", str(tiny_qwen_dir), "--name", f"m{i}"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0] * 8
    assert listed(tmp_path) == [f"m{i}" for i in range(8)]
    assert run_main("validate-registry", cwd=tmp_path).returncode == 0


def test_import_and_delete_racing_leave_all_or_nothing(tmp_path, tiny_qwen_dir):
    for _ in range(3):
        importer = subprocess.Popen(
            [sys.executable, str(MAIN), "import-model", str(tiny_qwen_dir), "--name", "race", "--force"],
            cwd=tmp_path,
            stderr=subprocess.DEVNULL,
        )
        deleter = subprocess.Popen(
            [sys.executable, str(MAIN), "delete-model", "race", "--yes"], cwd=tmp_path, stderr=subprocess.DEVNULL
        )
        importer.wait(timeout=120)
        deleter.wait(timeout=120)
        present = "race" in listed(tmp_path)
        assert present == (tmp_path / "models" / "race").is_dir()
        assert run_main("validate-registry", cwd=tmp_path).returncode == 0


def test_kill_9_during_import_leaves_a_state_validate_explains(tmp_path, tiny_qwen_dir):
    # An import that stalls while copying its files, so it can be killed half-way.
    script = (
        "import shutil, sys, time\n"
        "copy = shutil.copyfile\n"
        "def slow(src, dst, **kw):\n"
        "    copy(src, dst, **kw); print('copied', flush=True); time.sleep(60)\n"
        "shutil.copyfile = slow\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from registry.hub import import_model\nfrom registry.store import Registry\n"
        f"import_model(Registry({str(tmp_path / 'models')!r}), {str(tiny_qwen_dir)!r}, name='killed')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "copied"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert listed(tmp_path) == []
    result = run_main("validate-registry", cwd=tmp_path)
    assert result.returncode == 5 and "interrupted import" in result.stdout
    assert run_main("import-model", str(tiny_qwen_dir), "--name", "killed", cwd=tmp_path).returncode == 0


def test_register_checkpoint_then_use_name(tmp_path, corpus_file):
    args = [
        "--data",
        str(corpus_file),
        "n_layers=1",
        "d_model=32",
        "n_heads=2",
        "d_ff=64",
        "max_seq_len=32",
        "batch_size=8",
        "--max-steps",
        "2",
    ]
    assert run_main(*args, cwd=tmp_path).returncode == 0
    (checkpoint,) = tmp_path.glob("outputs/*/*/checkpoints/step-*")
    result = run_main("register-model", str(checkpoint), "--name", "my-char", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(run_main("model-info", "my-char", "--json", cwd=tmp_path).stdout)
    assert info["source"] == "finetune" and info["architecture_type"] == "custom-transformer" and info["step"] == 2
    # The registered model fine-tunes by name, with its own shape and vocabulary.
    tuned = run_main("--data", str(corpus_file), "model_name=my-char", "n_layers=3", "--max-steps", "2", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    assert "ignored from the config: n_layers=3 (the model has 1)" in tuned.stderr
    (tuned_dir,) = [d for d in run_dirs(tmp_path) if d != checkpoint.parent.parent]
    start = read_events(tuned_dir)[0]
    assert start["model"]["n_layers"] == 1 and start["lineage"]["fine_tuned_from"] == "my-char"
    assert start["fine_tune"] == "new fine-tune of my-char"
    foreign = run_main("model_name=my-char", cwd=tmp_path)  # the built-in corpus has other characters
    assert foreign.returncode == 3 and "characters the model's vocabulary has" in foreign.stderr


@pytest.mark.parametrize("args", [["list-models"], ["model-info", "tiny-qwen"], ["--help"]])
def test_fast_commands_import_neither_torch_nor_transformers(tmp_path, tiny_qwen_dir, args):
    run_main("import-model", str(tiny_qwen_dir), cwd=tmp_path)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(MAIN), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported
    assert time.perf_counter() - started < 10  # generous: the figure that matters is in bench/
