"""main.py end to end, in a subprocess, as a user runs it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import MAIN, TINY_MODEL, read_events, run_dirs, run_main, step_losses
from trainer.checkpoint.verify import verify_checkpoint


def tiny(corpus_file, *extra):
    return ["--data", str(corpus_file), *TINY_MODEL, "seed=3", *extra]


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    # Progress lines may come first once training has started; the error is one line, last.
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    if code in (2, 3):  # refused before training starts: nothing but the error
        assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_config_file_and_max_steps_run_exactly_n_steps(tmp_path, corpus_file):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "n_layers: 2\nd_model: 32\nn_heads: 2\nd_ff: 64\nmax_seq_len: 32\nbatch_size: 8\n"
        "max_steps: 500\ncheckpoint_cadence: 4\neval_cadence: 3\nsampling_cadence: 5\n"
    )
    result = run_main("--config", str(config), "--max-steps", "7", "--data", str(corpus_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert sorted(step_losses(run_dir)) == list(range(1, 8))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000004", "step-00000007"]
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "config.yaml", "events.jsonl", "train.log"):
        assert (run_dir / name).is_file(), name
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["max_steps"] == 7 and resolved["lr_decay_steps"] == 500  # --max-steps keeps the schedule
    assert "max_steps=7" in yaml.safe_load((run_dir / ".hydra/overrides.yaml").read_text())


def test_logging_completeness(tmp_path, corpus_file):
    result = run_main(*tiny(corpus_file, "max_steps=6", "eval_cadence=3", "sampling_cadence=3"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path)
    events = read_events(run_dir)
    assert all({"ts", "event", "run_id", "step"} <= e.keys() for e in events)
    start = events[0]
    assert start["event"] == "run_start"
    for key in ("run_id", "config_hash", "git_commit", "seed", "hooks", "config", "model", "data", "lineage"):
        assert key in start, key
    assert start["model"]["architecture_type"] == "custom-transformer"
    assert start["model"]["origin"] == "trained from scratch" and start["model"]["n_layers"] == 2
    assert start["hooks"] == [
        "console",  # on in a subprocess too: plain progress lines when stderr is not a terminal
        "event_log",
        "loss_plot",
        "eval(every 3 steps)",
        "sampling(every 3 steps)",
        "checkpoint(every 1000 steps, final always)",
    ]
    kinds = [e["event"] for e in events]
    assert kinds.count("step") == 6 and kinds.count("eval") == 2 and kinds.count("sample") == 2
    assert all(isinstance(e["val_loss"], float) for e in events if e["event"] == "eval")
    assert all(e["text"].startswith("The") for e in events if e["event"] == "sample")
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "completed"
    assert "val_loss" in (run_dir / "train.log").read_text()


def test_resume_cli_matches_uninterrupted_run(tmp_path, corpus_file):
    args = tiny(corpus_file, "checkpoint_cadence=10", "eval_cadence=5")
    assert run_main(*args, "--max-steps", "16", cwd=tmp_path).returncode == 0
    assert run_main(*args, "--max-steps", "8", cwd=tmp_path).returncode == 0
    straight, parted = run_dirs(tmp_path)
    resumed = run_main("--resume", str(parted), "--max-steps", "16", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert run_dirs(tmp_path) == [straight, parted]  # continued in place
    assert step_losses(straight) == step_losses(parted)
    resume_event = next(e for e in read_events(parted) if e["event"] == "resume")
    assert resume_event["from_step"] == 8 and resume_event["mode"] == "continuing this run"


def test_resume_from_older_checkpoint_branches_into_new_dir(tmp_path, corpus_file):
    assert run_main(*tiny(corpus_file, "max_steps=6", "checkpoint_cadence=2"), cwd=tmp_path).returncode == 0
    (original,) = run_dirs(tmp_path)
    before = (original / "events.jsonl").read_text()
    result = run_main("--resume", str(original / "checkpoints/step-00000004"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (branch,) = [d for d in run_dirs(tmp_path) if d != original]
    assert (original / "events.jsonl").read_text() == before
    assert sorted(step_losses(branch)) == [5, 6]
    assert step_losses(branch) == {s: v for s, v in step_losses(original).items() if s > 4}


def test_print_config_precedence_and_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("max_steps: 100\nn_layers: 2\nlearning_rate: 1e-3\n")
    result = run_main(
        "--config", str(config), "n_layers=3", "max_steps=50", "--max-steps", "20", "--print-config", cwd=tmp_path
    )
    shown = yaml.safe_load(result.stdout)
    assert (shown["n_layers"], shown["max_steps"], shown["learning_rate"], shown["lr_decay_steps"]) == (3, 20, 1e-3, 50)
    defaults = yaml.safe_load(run_main("--print-config", cwd=tmp_path).stdout)
    from trainer.config.schema import TrainingConfig

    assert defaults == TrainingConfig().to_dict()
    assert not (tmp_path / "outputs").exists()


def test_help_lists_options():
    result = subprocess.run([sys.executable, str(MAIN), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--config", "--max-steps", "--data", "--resume", "key=value", "Exit codes"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        (["--config", "nope.yaml"], 2, ["nope.yaml", "not found"]),
        (["--config", "{bad}"], 2, ["invalid YAML", "line 2"]),
        (["--config", "{unknown}"], 2, ["line 1", "unknown key 'max_stepz'", "did you mean 'max_steps'"]),
        (["--config", "{badtype}"], 2, ["batch_size='lots'", "expected int"]),
        (["d_model=100", "n_heads=3"], 2, ["d_model=100", "n_heads=3", "divisible"]),
        (["dropout=1.5"], 2, ["dropout=1.5"]),
        (["learning_rate=inf"], 2, ["learning_rate=inf", "must be a finite number"]),
        (["lerning_rate=0.1"], 2, ["did you mean 'learning_rate'"]),
        (["max_steps"], 2, ["key=value"]),
        (["--config", "{latin1}"], 2, ["latin1.txt", "UTF-8"]),
        (["sampling_prompt=${foo}"], 2, ["cannot resolve"]),
        (["seed=99999999999999999999"], 2, ["seed="]),
        (["model_name=qwen-0.5b-base"], 2, ["'qwen-0.5b-base' is not in the registry", "available: none yet"]),
        (["--data", "missing.txt"], 3, ["missing.txt", "not found"]),
        (["--data", "{empty}"], 3, ["empty.txt", "empty"]),
        (["--data", "{latin1}"], 3, ["latin1.txt", "not UTF-8"]),
        (["--data", "{short}", "max_seq_len=64"], 3, ["short.txt", "too short"]),
        (["--resume", "no/such/run"], 2, ["no/such/run", "not found"]),
        (["--data", "{corpus}", "sampling_cadence=2", "sampling_prompt=\u2603"], 2, ["sampling_prompt"]),
        (
            ["--data", "{corpus}", "learning_rate=1e30", "warmup_steps=0", "grad_clip=null", "max_steps=20"],
            4,
            ["loss became", "at step"],
        ),
        (
            ["--data", "{corpus}", "learning_rate=3e38", "warmup_steps=0", "grad_clip=null", "checkpoint_cadence=1"],
            4,
            ["the weights", "became NaN or infinite at step 1", "without saving"],
        ),
    ],
)
def test_bad_inputs_give_one_line_and_exit_code(tmp_path, corpus_file, args, code, fragments):
    files = {
        "bad": ("bad.yaml", "n_layers: 2\nd_model: 256: 3\nn_heads: 4\n"),
        "unknown": ("unknown.yaml", "max_stepz: 3\n"),
        "badtype": ("badtype.yaml", "batch_size: lots\n"),
        "empty": ("empty.txt", ""),
        "short": ("short.txt", "far too short"),
    }
    for name, text in files.values():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
    paths = {key: str(tmp_path / name) for key, (name, _) in files.items()}
    paths.update(latin1=str(tmp_path / "latin1.txt"), corpus=str(corpus_file))
    args = [a.format(**paths) if a.startswith("{") else a for a in args]
    if code == 4:
        args += TINY_MODEL
    result = run_main(*args, "--max-steps", "20", cwd=tmp_path)
    assert_one_line_error(result, code, *fragments)


def test_unknown_flag_is_one_line(tmp_path):
    result = run_main("--max-steps", "3", "--frobnicate", cwd=tmp_path)
    assert_one_line_error(result, 2, "unrecognized arguments: --frobnicate", "--help-config")


def test_corrupt_checkpoint_is_refused_and_untouched(tmp_path, corpus_file):
    assert run_main(*tiny(corpus_file, "max_steps=3"), cwd=tmp_path).returncode == 0
    (run_dir,) = run_dirs(tmp_path)
    weights = run_dir / "checkpoints/step-00000003/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = run_main("--resume", str(run_dir / "checkpoints/step-00000003"), "--data", str(corpus_file), cwd=tmp_path)
    assert_one_line_error(result, 2, "step-00000003", "truncated or altered")
    # Given the run directory, resume finds no complete checkpoint rather than loading this one.
    result = run_main("--resume", str(run_dir), cwd=tmp_path)
    assert_one_line_error(result, 2, "no complete checkpoint", "step-00000003", "truncated or altered")


def test_resume_says_which_damaged_checkpoint_it_skipped_and_keeps_it(tmp_path, corpus_file):
    assert run_main(*tiny(corpus_file, "max_steps=4", "checkpoint_cadence=2"), cwd=tmp_path).returncode == 0
    (run_dir,) = run_dirs(tmp_path)
    damaged = run_dir / "checkpoints/step-00000004"
    (damaged / "optimizer.pt").write_bytes(b"not what was saved")
    result = run_main("--resume", str(run_dir), "--max-steps", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "step-00000004" in line and "skipped" in line]
    assert "optimizer.pt is truncated or altered" in warning and "step-00000004.damaged" in warning
    assert (run_dir / "checkpoints/step-00000004.damaged/optimizer.pt").read_bytes() == b"not what was saved"
    assert sorted(step_losses(run_dir)) == [1, 2, 3, 4, 5]


def test_a_tensor_file_that_would_run_code_is_one_line_exit_2(tmp_path, corpus_file):
    import torch

    from tests.conftest import rehash
    from tests.unit.test_checkpoint import RunsCode

    assert run_main(*tiny(corpus_file, "max_steps=2"), cwd=tmp_path).returncode == 0
    (run_dir,) = run_dirs(tmp_path)
    checkpoint = run_dir / "checkpoints/step-00000002"
    torch.save({"state": RunsCode(tmp_path / "code-ran"), "param_groups": []}, checkpoint / "optimizer.pt")
    rehash(checkpoint)  # the manifest rewritten to match: only loading can tell
    result = run_main("--resume", str(run_dir), "--max-steps", "3", cwd=tmp_path)
    assert_one_line_error(result, 2, "optimizer.pt asks to load", "refused without running it")
    assert "weights_only" not in result.stderr and not (tmp_path / "code-ran").exists()


def test_a_linked_step_directory_is_one_line_exit_2(tmp_path, corpus_file):
    assert run_main(*tiny(corpus_file, "max_steps=2"), cwd=tmp_path).returncode == 0
    (run_dir,) = run_dirs(tmp_path)
    link = run_dir / "checkpoints/step-00000005"
    (tmp_path / "notes").mkdir()
    for target in (tmp_path / "gone", link, tmp_path / "notes"):  # dangling, a loop, not a checkpoint
        link.symlink_to(target)
        for given in (link, run_dir):
            result = run_main("--resume", str(given), "--max-steps", "6", cwd=tmp_path)
            assert_one_line_error(result, 2, "step-00000005: is a symbolic link", "remove the link")
        link.unlink()


def test_resume_refuses_changed_architecture_and_other_data(tmp_path, corpus_file):
    assert run_main(*tiny(corpus_file, "max_steps=3"), cwd=tmp_path).returncode == 0
    (run_dir,) = run_dirs(tmp_path)
    result = run_main("--resume", str(run_dir), "n_layers=4", "--max-steps", "5", cwd=tmp_path)
    assert_one_line_error(result, 2, "cannot change n_layers", "--branch NEW_NAME n_layers=")
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[::-1])
    result = run_main("--resume", str(run_dir), "--data", str(other), "--max-steps", "5", cwd=tmp_path)
    assert_one_line_error(result, 3, "differs from the data")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_checkpoint_and_exits(tmp_path, corpus_file, sig, code):
    process = subprocess.Popen(
        [sys.executable, str(MAIN), *tiny(corpus_file, "max_steps=100000", "checkpoint_cadence=null")],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        dirs = run_dirs(tmp_path) if (tmp_path / "outputs").exists() else []
        if dirs and (dirs[0] / "events.jsonl").exists() and '"event": "step"' in (dirs[0] / "events.jsonl").read_text():
            break
        time.sleep(0.2)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "interrupted by" in stderr and "--resume" in stderr and "Traceback" not in stderr
    (run_dir,) = run_dirs(tmp_path)
    events = read_events(run_dir)
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "interrupted"
    saved = events[-2]
    assert saved["event"] == "checkpoint"
    assert verify_checkpoint(tmp_path / saved["path"])["step"] == saved["step"]
    resumed = run_main("--resume", str(run_dir), "--max-steps", str(saved["step"] + 2), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR1, 143), (signal.SIGUSR2, 143)]
)
def test_a_signal_during_start_up_is_one_line_and_its_exit_code(tmp_path, sig, code):
    """The built-in corpus's cache file is a named pipe: the run blocks reading it while the run
    is planned, after torch is imported and before any run directory exists; the signal
    arrives there."""
    from trainer.data.builtin_corpus import cache_path

    env = {"LMRUNNER_CACHE": str(tmp_path / "cache")}
    fifo = cache_path(Path(env["LMRUNNER_CACHE"]))
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, str(MAIN), "max_steps=1"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    deadline = time.time() + 60
    while True:  # opening the write end succeeds once the run has opened the read end
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert time.time() < deadline and process.poll() is None, "the run never opened its data"
            time.sleep(0.05)
    try:
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(writer)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == code and len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    assert not (tmp_path / "outputs").exists()
