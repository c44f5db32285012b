"""Scaling out on CPU: torchrun with 2 gloo ranks, preemption signals, and a submitit_local sweep."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import MAIN, read_events, run_dirs, run_main, step_losses

TINY = """\
n_layers: 2
d_model: 32
n_heads: 2
d_ff: 64
max_seq_len: 32
batch_size: 8
dropout: 0.0
seed: 5
max_steps: 10
warmup_steps: 2
eval_cadence: 5
eval_batches: 4
checkpoint_cadence: null
"""


def torchrun(*args, cwd, nproc=2):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(MAIN)]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def close(a: dict, b: dict, rel: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rel * abs(b[k]) for k in b)


@pytest.fixture
def tiny(tmp_path, corpus_file):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY + f"data_path: {corpus_file}\n")
    return config


def test_two_ranks_equal_one_and_resume_across_world_sizes(tmp_path, tiny):
    two = torchrun("--config", str(tiny), "--max-steps", "10", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    (two_dir,) = run_dirs(tmp_path)  # one run directory for both ranks
    assert len(list(tmp_path.rglob("events.jsonl"))) == 1
    start = read_events(two_dir)[0]
    assert start["world_size"] == 2 and start["config"]["batch_size"] == 8
    one = run_main("--config", str(tiny), "--max-steps", "10", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    (one_dir,) = [d for d in run_dirs(tmp_path) if d != two_dir]
    assert len(step_losses(two_dir)) == 10 and close(step_losses(two_dir), step_losses(one_dir), 1e-5)
    evals = lambda d: {e["step"]: e["val_loss"] for e in read_events(d) if e["event"] == "eval"}  # noqa: E731
    assert close(evals(two_dir), evals(one_dir), 1e-5)

    # A checkpoint written by 2 ranks resumes on 1 and goes on as the 2-rank run did.
    first = torchrun("--config", str(tiny), "--max-steps", "5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (parted,) = [d for d in run_dirs(tmp_path) if d not in (two_dir, one_dir)]
    resumed = run_main("--resume", str(parted), "--max-steps", "10", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert close(step_losses(parted), step_losses(two_dir), 1e-5)


def test_one_console_under_torchrun_warnings_included(tmp_path, tiny, corpus_file):
    """Only rank 0 talks: lines every rank would log alike (here two warnings about a registered
    model's own shape) appear once."""
    assert run_main("--config", str(tiny), "--max-steps", "2", cwd=tmp_path).returncode == 0
    (run_dir,) = run_dirs(tmp_path)
    registered = run_main("register-model", str(run_dir), "--name", "tiny-custom", cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr
    settings = ["model_name=tiny-custom", "n_layers=3", "max_seq_len=64", "max_steps=2", f"data_path={corpus_file}"]
    two = torchrun(*settings, cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    ours = [line for line in two.stderr.splitlines() if line and not line.startswith(("W1", "*", "["))]
    assert any("ignored from the config: n_layers=3 (the model has 2)" in line for line in ours), two.stderr
    assert any("max_seq_len=64 capped to 32" in line for line in ours), two.stderr
    assert len(ours) == len(set(ours)), two.stderr


@pytest.mark.slow
def test_compiled_ranks_compute_what_one_eager_process_does(tmp_path, tiny):
    """compile=true under DDP: the compiled module is DDP itself (its gradient hooks intact)."""
    two = torchrun("--config", str(tiny), "--max-steps", "6", "compile=true", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    (two_dir,) = run_dirs(tmp_path)
    assert read_events(two_dir)[0]["config"]["compile"] is True
    one = run_main("--config", str(tiny), "--max-steps", "6", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    (one_dir,) = [d for d in run_dirs(tmp_path) if d != two_dir]
    assert len(step_losses(two_dir)) == 6 and close(step_losses(two_dir), step_losses(one_dir), 1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_ranks(tiny, cwd, world=2):
    """The ranks as srun (or torchrun) starts them: one process each, told who they are."""
    port = _free_port()
    ranks = []
    for rank in range(world):
        env = {
            **{k: v for k, v in os.environ.items() if k != "LMRUNNER_DEBUG"},
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        args = ["--config", str(tiny), "--max-steps", "100000", "eval_cadence=null"]
        ranks.append(
            subprocess.Popen(
                [sys.executable, str(MAIN), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    return ranks


@pytest.mark.parametrize("sig, targets", [("SIGTERM", "all"), ("SIGUSR1", "rank 1 only")])
def test_preemption_signal_stops_every_rank_at_one_step_with_one_checkpoint(tmp_path, tiny, sig, targets):
    ranks = _start_ranks(tiny, tmp_path)
    deadline = time.monotonic() + 120
    while not (list(tmp_path.glob("outputs/*/*/events.jsonl")) and len(step_losses(run_dirs(tmp_path)[0])) >= 20):
        assert time.monotonic() < deadline and all(p.poll() is None for p in ranks), "the ranks did not start"
        time.sleep(0.2)
    for process in ranks if targets == "all" else ranks[1:]:
        process.send_signal(getattr(signal, sig))
    codes = [p.wait(timeout=120) for p in ranks]
    assert codes == [143, 143], [p.stderr.read().decode()[-2000:] for p in ranks]
    (run_dir,) = run_dirs(tmp_path)
    (checkpoint,) = (run_dir / "checkpoints").iterdir()
    end = read_events(run_dir)[-1]
    assert (
        end["event"] == "run_end"
        and end["status"] == "interrupted"
        and end["checkpoint"] == str(checkpoint.relative_to(tmp_path))
    )
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == end["step"] == max(step_losses(run_dir))
    resumed = run_main("--resume", str(run_dir), "--max-steps", str(state["step"] + 2), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_submitit_local_sweep_completes_with_summary(tmp_path, corpus_file):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_main(
        "-m",
        "hydra/launcher=submitit_local",
        "training=fast",
        "n_layers=1,2",
        "d_model=32",
        "n_heads=2",
        "d_ff=64",
        "max_seq_len=32",
        "batch_size=4",
        "max_steps=2",
        f"data_path={corpus_file}",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (summary,) = tmp_path.glob("multirun/*/*/summary.jsonl")
    lines = [json.loads(line) for line in summary.read_text().splitlines()]
    assert sorted(line["job"] for line in lines) == [0, 1] and {line["status"] for line in lines} == {"completed"}
    assert "completed" in result.stdout  # the table
