"""Fine-tuning on chat and instruction data end to end, through both front doors, as a user
runs it: the format decided and recorded, the token cache reused, exact resume, and 2 DDP
ranks equal to 1 on packed rows."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import MAIN, read_events, run_dirs, run_main, step_losses
from tests.unit.test_data_formats import chat_rows, write_jsonl

pytest.importorskip("datasets")

TINY = ["max_seq_len=128", "batch_size=4", "seed=3", "learning_rate=3e-3", "warmup_steps=2", "dropout=0.0"]


@pytest.fixture
def workspace(tmp_path, tiny_chat_qwen_dir):
    """A directory with the tiny chat model in its registry and a chat JSONL file."""
    imported = run_main("import-model", str(tiny_chat_qwen_dir), "--name", "tiny-chat", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    write_jsonl(tmp_path / "chat.jsonl", chat_rows(48))
    return tmp_path


def test_chat_data_through_the_hydra_door_records_its_format_and_reuses_its_tokens(workspace):
    args = ["model_name=tiny-chat", "data=chat", "data_path=chat.jsonl", "max_steps=3", *TINY]
    first = run_main(*args, cwd=workspace)
    assert first.returncode == 0, first.stderr
    assert "data: tokenized chat.jsonl" in first.stderr
    (run_dir,) = run_dirs(workspace)
    data = read_events(run_dir)[0]["data"]
    assert data["format"] == "chat" and data["format_reason"] == "data_format: chat"
    assert data["examples"] == 48 and 0 < data["target_tokens"] < data["tokens"] and data["template_sha256"]
    state = json.loads(next(run_dir.glob("checkpoints/step-*/trainer_state.json")).read_text())
    assert state["data"]["sha256"] == data["sha256"] == state["data_sha256"]
    second = run_main(*args, cwd=workspace)
    assert second.returncode == 0, second.stderr
    assert "data: tokenized" not in second.stderr and "tokens from the cache" in second.stderr


def test_alpaca_data_through_the_plain_door(workspace):
    rows = [
        {"instruction": f"Count to {i}.", "input": "", "output": " ".join(map(str, range(1, i + 2)))} for i in range(40)
    ]
    (workspace / "alpaca.json").write_text(json.dumps(rows), encoding="utf-8")
    result = run_main("--data", "alpaca.json", "model_name=tiny-chat", "--max-steps", "3", *TINY, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "completion (auto: found the Alpaca columns instruction and output)" in result.stderr
    (run_dir,) = run_dirs(workspace)
    assert read_events(run_dir)[0]["data"]["format"] == "completion"


def test_a_chat_run_resumes_bit_for_bit(workspace):
    args = ["--data", "chat.jsonl", "model_name=tiny-chat", "checkpoint_cadence=3", *TINY]
    assert run_main(*args, "--max-steps", "6", cwd=workspace).returncode == 0
    assert run_main(*args, "--max-steps", "3", cwd=workspace).returncode == 0
    straight, parted = run_dirs(workspace)
    resumed = run_main("--resume", str(parted), "--max-steps", "6", cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr
    assert step_losses(straight) == step_losses(parted)


def test_the_character_model_refuses_chat_data_with_one_line(workspace):
    result = run_main("--data", "chat.jsonl", "max_steps=2", cwd=workspace)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "which need a model's tokenizer" in lines[0], result.stderr
    assert not (workspace / "outputs").exists()


def test_two_ranks_equal_one_on_packed_chat_rows(workspace):
    args = ["--data", "chat.jsonl", "model_name=tiny-chat", "--max-steps", "4", *TINY]
    one = run_main(*args, cwd=workspace)
    assert one.returncode == 0, one.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(MAIN)]
    two = subprocess.run([*command, *args], cwd=workspace, capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr
    first, second = run_dirs(workspace)
    ones, twos = step_losses(first), step_losses(second)
    assert ones.keys() == twos.keys() == {1, 2, 3, 4}
    assert all(abs(ones[s] - twos[s]) <= 1e-5 * abs(ones[s]) for s in ones), (ones, twos)
