"""The Hydra front door end to end: run directories, sweeps, errors, resume."""

import json
import subprocess
import sys

import pytest

from tests.conftest import MAIN, read_events, run_dirs, run_main, step_losses

TINY = ["n_layers=1", "d_model=32", "n_heads=2", "d_ff=64", "max_seq_len=32", "batch_size=8"]


def sweep_dirs(cwd):
    return sorted(p for p in (cwd / "multirun").glob("*/*") if p.is_dir())


def test_single_run_writes_hydra_layout(tmp_path, corpus_file):
    result = run_main("model=custom", "training=fast", "max_steps=5", *TINY, f"data_path={corpus_file}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path)
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "config.yaml", "train.log"):
        assert (run_dir / name).is_file(), name
    assert sorted(step_losses(run_dir)) == [1, 2, 3, 4, 5]
    start = read_events(run_dir)[0]
    assert start["config"]["eval_cadence"] == 200 and start["config"]["n_layers"] == 1  # group, then override


def test_sweep_makes_a_directory_and_summary_line_per_job(tmp_path, corpus_file):
    result = run_main(
        "-m",
        "max_steps=2",
        "n_layers=1,2",
        "training=fast,detailed",
        *TINY[1:],
        f"data_path={corpus_file}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    lines = [json.loads(line) for line in (sweep / "summary.jsonl").read_text().splitlines()]
    assert sorted(line["job"] for line in lines) == [0, 1, 2, 3]
    for line in lines:
        assert line["status"] == "completed" and line["steps"] == 2 and line["final_loss"] > 0
        assert line["final_val_loss"] > 0 and line["wall_time_s"] > 0 and line["error"] is None
        assert sorted(step_losses(sweep / str(line["job"]))) == [1, 2]
    assert {" ".join(line["overrides"][:3]) for line in lines} >= {"max_steps=2 n_layers=1 training=fast"}
    assert "job  overrides" in result.stdout and result.stdout.count("completed") == 4


def test_failed_job_is_reported_in_the_summary(tmp_path, corpus_file):
    shape = ["n_layers=1", "d_model=32", "d_ff=64", "max_seq_len=32", "batch_size=8"]
    result = run_main("-m", "max_steps=1", "n_heads=3,2", *shape, f"data_path={corpus_file}", cwd=tmp_path)
    assert result.returncode == 1
    (sweep,) = sweep_dirs(tmp_path)
    lines = {json.loads(line)["job"]: json.loads(line) for line in (sweep / "summary.jsonl").read_text().splitlines()}
    assert lines[0]["status"] == "failed" and "divisible by n_heads" in lines[0]["error"]
    assert lines[0]["exit_code"] == 2 and lines[1]["status"] == "completed"
    assert "failed" in result.stdout and "Traceback" not in result.stderr


def test_joblib_launcher_runs_the_sweep(tmp_path, corpus_file):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = run_main(
        "-m", "hydra/launcher=joblib", "max_steps=2", "seed=1,2", *TINY, f"data_path={corpus_file}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert len((sweep / "summary.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["max_stepz=3"], "did you mean 'max_steps'"),
        (["n_layers=abc"], "n_layers='abc' has the wrong type: expected int"),
        (["training=fastt"], "did you mean 'fast'"),
        (["model=qwen-base", "max_steps=500"], "'qwen-0.5b-base' is not in the registry"),
        (["d_model=100", "n_heads=3"], "must be divisible by n_heads"),
        (["resume=no/such/run"], "not found"),
        (["n_layers=2,4"], "n_layers=2,4 is a sweep (one job per value), which needs -m"),
        (["seed=99999999999999999999"], "seed="),
    ],
)
def test_errors_exit_2_with_one_line_and_no_run_directory(tmp_path, args, fragment):
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "outputs").exists()


def test_resume_run_dir_continues_in_place(tmp_path, corpus_file):
    common = [*TINY, "dropout=0.1", "seed=5", "checkpoint_cadence=3", f"data_path={corpus_file}"]
    assert run_main(*common, "max_steps=8", cwd=tmp_path).returncode == 0
    straight = run_dirs(tmp_path)[0]
    assert run_main(*common, "max_steps=4", "lr_decay_steps=8", cwd=tmp_path).returncode == 0
    parted = [d for d in run_dirs(tmp_path) if d != straight][0]
    hydra_config = (parted / ".hydra/config.yaml").read_text()
    result = run_main(f"resume={parted}", "max_steps=8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(run_dirs(tmp_path)) == 2  # no new directory
    assert (parted / ".hydra/config.yaml").read_text() == hydra_config
    kinds = [e["event"] for e in read_events(parted)]
    assert kinds.count("run_start") == 1 and kinds.count("resume") == 1
    assert step_losses(parted) == step_losses(straight)


def test_runs_started_together_get_their_own_directories(tmp_path, corpus_file):
    command = [sys.executable, str(MAIN), "max_steps=1", *TINY, f"data_path={corpus_file}"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.DEVNULL) for _ in range(3)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 3 and all(len(read_events(d)) > 2 for d in dirs)


def test_help_shows_both_front_doors_and_the_groups(tmp_path):
    out = run_main("--help", cwd=tmp_path).stdout
    for text in (
        "model=custom|qwen-base|qwen-finetuned",
        "training=default|detailed|fast",
        "--config",
        "-m",
        "--cfg job",
    ):
        assert text in out


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_main("training=fast", "n_layers=3", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0 and "n_layers: 3" in result.stdout and "eval_cadence: 200" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_ctrl_c_stops_the_whole_sweep(tmp_path, corpus_file):
    import signal
    import time

    command = [
        sys.executable,
        str(MAIN),
        "-m",
        "max_steps=100000",
        "seed=1,2",
        "checkpoint_cadence=null",
        *TINY,
        f"data_path={corpus_file}",
    ]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        events = list((tmp_path / "multirun").glob("*/*/0/events.jsonl"))
        if events and '"event": "step"' in events[0].read_text():
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr and "Traceback" not in stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert not (sweep / "1").exists()  # the second job never started
    (line,) = [json.loads(line) for line in (sweep / "summary.jsonl").read_text().splitlines()]
    assert line["status"] == "interrupted" and line["exit_code"] == 130


DATA_PROBLEMS = {
    "missing.txt": (None, "data file not found"),
    "empty.txt": (b"  \n", "data file is empty"),
    "binary.txt": (bytes(range(256)) * 4, "is not UTF-8 text (invalid byte at offset 128)"),
    "latin1.txt": ("caf\xe9 ".encode("latin-1") * 100, "is not UTF-8 text (invalid byte at offset 3)"),
    "short.txt": (b"far too short", "too short: the training split has 12 tokens"),
}


@pytest.mark.parametrize("door", ["hydra", "plain"])
@pytest.mark.parametrize("name", sorted(DATA_PROBLEMS))
def test_bad_data_exits_3_before_any_run_directory(tmp_path, door, name):
    content, message = DATA_PROBLEMS[name]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    args = [f"data_path={name}"] if door == "hydra" else ["--data", name]
    result = run_main(*args, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 3 and lines == [lines[0]] and f"{name}: {message}" in lines[0], result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_run_directory_that_holds_a_run_is_refused(tmp_path, corpus_file):
    args = [*TINY, "max_steps=2", f"data_path={corpus_file}", "hydra.run.dir=mine"]
    assert run_main(*args, cwd=tmp_path).returncode == 0
    before = sorted(p.name for p in (tmp_path / "mine").rglob("*"))
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2 and "mine already holds a run" in result.stderr and "resume=mine" in result.stderr
    assert sorted(p.name for p in (tmp_path / "mine").rglob("*")) == before  # .hydra/ untouched too


def test_a_sweep_directory_that_holds_a_sweep_is_refused(tmp_path, corpus_file):
    args = ["-m", *TINY, "max_steps=1", f"data_path={corpus_file}", "hydra.sweep.dir=sweep", "seed=1,2"]
    assert run_main(*args, cwd=tmp_path).returncode == 0
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2 and "already holds a sweep" in result.stderr


@pytest.mark.parametrize("door", ["hydra", "plain"])
def test_both_doors_close_with_the_same_lines_on_the_console_and_in_train_log(tmp_path, corpus_file, door):
    args = [*TINY, "max_steps=2"] + ([f"data_path={corpus_file}"] if door == "hydra" else ["--data", str(corpus_file)])
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path)
    done = f"done: 2 steps, final loss {step_losses(run_dir)[2]:.4f}, run directory {run_dir.relative_to(tmp_path)}"
    assert result.stderr.splitlines()[-1] == done
    assert (run_dir / "train.log").read_text().splitlines()[-1].endswith(done)


def test_train_log_ends_with_the_error_of_a_run_that_failed(tmp_path, corpus_file):
    args = [*TINY, f"data_path={corpus_file}", "learning_rate=1e30", "warmup_steps=0", "grad_clip=null", "max_steps=20"]
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 4
    (run_dir,) = run_dirs(tmp_path)
    error_line = result.stderr.splitlines()[-1]
    assert error_line.startswith("error: loss became")
    assert (run_dir / "train.log").read_text().splitlines()[-1].endswith(error_line)
