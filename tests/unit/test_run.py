"""The training pipeline in-process: resume exactness, reproducibility, failure handling."""

import dataclasses
import logging
import os

import pytest
import torch

from tests.conftest import read_events, step_losses, tiny_config
from trainer.config.compose import ConfigLayer
from trainer.errors import CheckpointError, DiskWriteError, NonFiniteLossError, NonFiniteStateError
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.run.execute import run_training
from trainer.run.plan import plan_run
from trainer.run.rundir import create_run_dir
from trainer.run.start import start_run
from trainer.training.loop import Trainer


def run(config, run_dir, resume=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_training(config, run_dir, resume=resume, console=False)


def events_of(run_dir, kind, field):
    return {e["step"]: e[field] for e in read_events(run_dir) if e["event"] == kind}


def test_resume_is_bit_identical(tmp_path, corpus_file):
    straight = tmp_path / "straight"
    run(tiny_config(corpus_file), straight)
    parted = tmp_path / "parted"
    run(tiny_config(corpus_file, max_steps=5, lr_decay_steps=12), parted)
    config, plan = plan_run([ConfigLayer("test", {"resume": str(parted), "max_steps": 12})])
    assert plan.continue_in == parted and plan.state["step"] == 5
    run(config, parted, resume=plan)

    assert step_losses(straight) == step_losses(parted)  # exact float equality
    assert events_of(straight, "eval", "val_loss").items() <= events_of(parted, "eval", "val_loss").items()
    final = "checkpoints/step-00000012/model.safetensors"
    assert (straight / final).read_bytes() == (parted / final).read_bytes()
    kinds = [e["event"] for e in read_events(parted)]
    assert kinds.count("run_start") == 1 and kinds.count("resume") == 1
    assert len({e["run_id"] for e in read_events(parted)}) == 1  # the same run, continued


def resume_run(run_dir, max_steps):
    """Resume ``run_dir`` in place up to ``max_steps``; return its (last) resume event."""
    config, plan = plan_run([ConfigLayer("test", {"resume": str(run_dir), "max_steps": max_steps})])
    assert plan.continue_in == run_dir
    run(config, run_dir, resume=plan)
    return [e for e in read_events(run_dir) if e["event"] == "resume"][-1]


def test_resume_repairs_a_torn_event_log_before_appending(tmp_path, corpus_file):
    run_dir = tmp_path / "torn"
    run(tiny_config(corpus_file, max_steps=3, lr_decay_steps=6), run_dir)
    with (run_dir / "events.jsonl").open("a") as events:
        events.write('{"ts": "2026-11-24T10:00:00')  # 27 bytes: the disk filled mid-line
    resumed = resume_run(run_dir, 6)
    assert resumed["event_log_repaired"] == "dropped a torn last line of 27 bytes"
    assert sorted(step_losses(run_dir)) == [1, 2, 3, 4, 5, 6]  # every line parses again


def test_resume_removes_leftovers_of_a_killed_write_and_says_so(tmp_path, corpus_file, caplog):
    from tests.unit.test_checkpoint import dead_pid, leftover

    run_dir = tmp_path / "killed"
    run(tiny_config(corpus_file, max_steps=3, lr_decay_steps=6), run_dir)
    killed = leftover(run_dir / "checkpoints", f".partial-step-00000004-{dead_pid()}")
    alive = leftover(run_dir / "checkpoints", f".partial-step-00000004-{os.getppid()}")  # a live writer's
    with caplog.at_level(logging.INFO, logger="lmrunner"):
        resumed = resume_run(run_dir, 6)
    assert resumed["cleaned"] == [str(killed)]
    assert not killed.exists() and alive.is_dir()
    assert f"removed {killed} (left by a killed checkpoint write)" in caplog.text


def flip_bytes(file, at=-20):
    """Same size, other bytes: only the sha256 can tell."""
    data = bytearray(file.read_bytes())
    data[at] ^= 0xFF
    file.write_bytes(bytes(data))


def test_resume_sets_a_damaged_newest_checkpoint_aside_and_says_so(tmp_path, corpus_file, caplog):
    straight = tmp_path / "straight"
    run(tiny_config(corpus_file, max_steps=8, checkpoint_cadence=2), straight)
    run_dir = tmp_path / "damaged"
    run(tiny_config(corpus_file, max_steps=6, lr_decay_steps=8, checkpoint_cadence=2), run_dir)
    damaged = run_dir / "checkpoints" / "step-00000006"
    flip_bytes(damaged / "model.safetensors")
    damaged_bytes = (damaged / "model.safetensors").read_bytes()
    with caplog.at_level(logging.INFO, logger="lmrunner"):
        resumed = resume_run(run_dir, 8)
    assert resumed["from"] == str(run_dir / "checkpoints" / "step-00000004")
    aside = run_dir / "checkpoints" / "step-00000006.damaged"
    (line,) = [r.getMessage() for r in caplog.records if "step-00000006" in r.getMessage()]
    assert line == (
        f"skipped checkpoint {damaged}: corrupt checkpoint: model.safetensors does not match its sha256; "
        f"moved it aside to {aside}"
    )
    assert resumed["set_aside"] == [
        {
            "path": str(damaged),
            "reason": "corrupt checkpoint: model.safetensors does not match its sha256",
            "moved_to": str(aside),
        }
    ]
    assert (aside / "model.safetensors").read_bytes() == damaged_bytes  # kept as it was, never overwritten
    assert step_losses(run_dir) == step_losses(straight)  # steps 5 and 6 again, then 7 and 8
    final = "checkpoints/step-00000008/model.safetensors"
    assert (run_dir / final).read_bytes() == (straight / final).read_bytes()


def with_wrong_moment_shape(saved):
    next(iter(saved["state"].values()))["exp_avg"] = torch.zeros(2)
    return saved


@pytest.mark.parametrize(
    "name, tamper",
    [
        ("rng_state.pt", lambda saved: [1, 2, 3]),
        ("rng_state.pt", lambda saved: {"torch_cpu": torch.zeros(3)}),
        ("optimizer.pt", lambda saved: {"state": {}, "param_groups": "x"}),
        ("optimizer.pt", with_wrong_moment_shape),  # torch's load_state_dict takes it; a step would not
    ],
)
def test_state_files_of_the_wrong_shape_are_one_line(tmp_path, corpus_file, name, tamper):
    """Tensor files that load (plain tensors) but were replaced, the manifest re-hashed to match."""
    from tests.conftest import rehash
    from trainer.checkpoint.tensors import load_tensors, save_tensors

    result = run(tiny_config(corpus_file, max_steps=2, lr_decay_steps=3), tmp_path / "r")
    save_tensors(tamper(load_tensors(result.checkpoint / name)), result.checkpoint / name)
    rehash(result.checkpoint)
    with pytest.raises(CheckpointError) as info:
        resume_run(result.run_dir, 3)
    assert info.value.exit_code == 2 and "\n" not in str(info.value), str(info.value)
    assert str(info.value).startswith(f"{result.checkpoint}: {name} ")


def test_same_seed_same_losses_and_samples(tmp_path, corpus_file):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run(tiny_config(corpus_file), a)
    run(tiny_config(corpus_file), b)
    run(tiny_config(corpus_file, seed=12), c)
    assert step_losses(a) == step_losses(b)
    assert events_of(a, "sample", "text") == events_of(b, "sample", "text")
    assert step_losses(a) != step_losses(c)


def test_drawn_seed_is_logged_and_stored(tmp_path, corpus_file):
    result = run(tiny_config(corpus_file, seed=None, max_steps=2), tmp_path / "r")
    start = read_events(result.run_dir)[0]
    assert start["event"] == "run_start" and start["seed_source"] == "drawn"
    assert isinstance(start["seed"], int) and start["config"]["seed"] == start["seed"]
    state = (result.checkpoint / "trainer_state.json").read_text()
    assert f'"seed": {start["seed"]}' in state


def test_grad_accumulation_matches_one_batch(tmp_path, corpus_file):
    one = run(tiny_config(corpus_file, dropout=0.0, max_steps=4), tmp_path / "one").run_dir
    two = run(tiny_config(corpus_file, dropout=0.0, max_steps=4, grad_accum_steps=2), tmp_path / "two").run_dir
    for step, loss in step_losses(one).items():
        assert step_losses(two)[step] == pytest.approx(loss, rel=1e-5)


def test_non_finite_loss_stops_without_checkpoint(tmp_path, corpus_file, monkeypatch):
    original = CustomTransformerAdapter.loss_sum
    calls = {"n": 0}

    def poisoned(self, inputs, targets, positions=None):
        loss = original(self, inputs, targets, positions)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(CustomTransformerAdapter, "loss_sum", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as info:
        run(tiny_config(corpus_file, checkpoint_cadence=1, eval_cadence=None, sampling_cadence=None), run_dir)
    assert info.value.step == 3 and info.value.exit_code == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    tail = read_events(run_dir)[-2:]
    assert tail[0]["event"] == "error" and tail[0]["failed_step"] == 3
    assert tail[1]["event"] == "run_end" and tail[1]["status"] == "failed"
    # The hint names what works: a branch from the last good checkpoint with a gentler setting.
    last_good = str(run_dir / "checkpoints" / "step-00000002")
    assert f"--resume {last_good} --branch NEW_NAME learning_rate=" in info.value.hint
    monkeypatch.setattr(CustomTransformerAdapter, "loss_sum", original)
    branch = ConfigLayer(
        "the hint, followed",
        {"resume": last_good, "branch": "gentler", "learning_rate": 1e-4, "registry_dir": str(tmp_path / "models")},
    )
    result = start_run([branch], lambda: create_run_dir(tmp_path / "outputs"), overrides=None, console=False)
    assert result.status == "completed" and result.steps == 12


def poison_after_step(monkeypatch, at_step, poison):
    """After the optimizer step ``at_step`` (whose loss was finite), ``poison(trainer)``."""
    original = Trainer.training_step

    def training_step(self, batch):
        loss = original(self, batch)
        if self.step == at_step:
            poison(self)
        return loss

    monkeypatch.setattr(Trainer, "training_step", training_step)


def poison_weight(trainer):
    next(trainer.model.parameters()).data[0] = float("inf")


def poison_moment(trainer):
    state = next(iter(trainer.optimizer.state.values()))
    state["exp_avg_sq"][0] = float("nan")


@pytest.mark.parametrize("poison, what", [(poison_weight, "weights"), (poison_moment, "optimizer state")])
def test_non_finite_state_is_never_saved(tmp_path, corpus_file, monkeypatch, poison, what):
    poison_after_step(monkeypatch, 3, poison)
    run_dir = tmp_path / "poisoned"
    with pytest.raises(NonFiniteStateError) as info:
        run(tiny_config(corpus_file, checkpoint_cadence=1, eval_cadence=None, sampling_cadence=None), run_dir)
    assert info.value.step == 3 and info.value.exit_code == 4
    assert what in str(info.value) and "step 3" in str(info.value)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    tail = read_events(run_dir)[-2:]
    assert tail[0]["event"] == "error" and tail[0]["failed_step"] == 3
    assert tail[1]["event"] == "run_end" and tail[1]["status"] == "failed"


def test_disk_full_during_a_checkpoint_reports_the_first_error_only(tmp_path, corpus_file, monkeypatch, capsys):
    import errno
    import os

    import trainer.run.events
    from tests.unit.test_checkpoint import DiskFull
    from trainer.checkpoint.verify import verify_checkpoint
    from trainer.cli.errors import report_error

    real_save, real_write, saves = torch.save, os.write, []

    def save(obj, f, *args, **kwargs):
        assert hasattr(f, "write"), "tensors must go through a Python file, so a failed write keeps its errno"
        saves.append(f)
        return real_save(obj, f if len(saves) <= 2 else DiskFull(f, allowed=64), *args, **kwargs)

    def write(fd, data):  # once the disk is full, events.jsonl cannot grow either
        if len(saves) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(torch, "save", save)  # the 3rd file saved, the first of step 4, fills the disk
    monkeypatch.setattr(trainer.run.events.os, "write", write)
    run_dir = tmp_path / "full"
    config = tiny_config(corpus_file, max_steps=6, checkpoint_cadence=2, eval_cadence=None, sampling_cadence=None)
    with pytest.raises(DiskWriteError) as info:
        run(config, run_dir)
    assert report_error(info.value) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "writing checkpoint step-00000004 failed: No space left on device" in line, line
    assert str(run_dir / "checkpoints") in line and "--resume" in line and "inline_container" not in line
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000002"]  # no partial left
    verify_checkpoint(run_dir / "checkpoints" / "step-00000002")
    assert [e["step"] for e in read_events(run_dir) if e["event"] == "checkpoint"] == [2]


def test_a_full_disk_under_train_log_prints_no_logging_tracebacks(tmp_path, capsys):
    import errno
    import logging

    from trainer.run.execute import _attach_file_log

    handler = _attach_file_log(tmp_path / "train.log")

    class FullStream:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    handler.stream = FullStream()
    try:
        logging.getLogger("lmrunner").info("step 4: checkpoint ...")
    finally:
        logging.getLogger("lmrunner").removeHandler(handler)
    assert "Logging error" not in capsys.readouterr().err  # the console and the one error line say it all


def test_periodic_and_final_checkpoints_and_pruning(tmp_path, corpus_file):
    result = run(tiny_config(corpus_file, max_steps=10, checkpoint_cadence=3, keep_last_checkpoints=2), tmp_path / "r")
    names = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert names == ["step-00000009", "step-00000010"]  # 3, 6 pruned; 10 is the final one
    saved = [e["step"] for e in read_events(result.run_dir) if e["event"] == "checkpoint"]
    assert saved == [3, 6, 9, 10]


def test_null_cadences_still_end_a_run_with_one_validation_loss_and_one_sample(tmp_path, corpus_file):
    """A run is never silent about what it learned: whatever the cadences, its end is evaluated and sampled."""
    result = run(tiny_config(corpus_file, max_steps=4, eval_cadence=None, sampling_cadence=None), tmp_path / "r")
    events = read_events(result.run_dir)
    assert [(e["event"], e["step"]) for e in events if e["event"] in ("eval", "sample")] == [("eval", 4), ("sample", 4)]
    (sample,) = [e for e in events if e["event"] == "sample"]
    assert sample["text"].startswith("The") and sample["prompt"] == "The"
    assert result.final_val_loss is not None
    assert events[0]["hooks"] == [
        "event_log",
        "loss_plot",
        "eval(at the end)",
        "sampling(at the end)",
        "checkpoint(periodic off, final always)",
    ]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [4]


def test_the_end_of_run_sample_never_fails_a_run_over_its_prompt(tmp_path, corpus_file):
    """sampling_prompt is checked only when sampling is asked for; the sample every run ends
    with starts from nothing when the vocabulary cannot write its prompt."""
    config = tiny_config(corpus_file, max_steps=2, eval_cadence=None, sampling_cadence=None, sampling_prompt="\u2603")
    events = read_events(run(config, tmp_path / "r").run_dir)
    (sample,) = [e for e in events if e["event"] == "sample"]
    assert sample["prompt"] == "" and len(sample["text"]) >= config.sampling_max_length


def test_restore_trainer_brings_back_weights_optimizer_and_step(tmp_path, corpus_file):
    config = tiny_config(corpus_file, max_steps=6)
    result = run(config, tmp_path / "r")
    from safetensors.torch import load_file

    from trainer.checkpoint.tensors import load_tensors
    from trainer.data.prepare import open_data
    from trainer.run.build import restore_trainer
    from trainer.training.loop import RunInfo

    data = open_data(config)
    info = RunInfo(tmp_path / "r2", "x", data.label, data.sha256)
    trainer = restore_trainer(
        result.checkpoint,
        config=dataclasses.replace(config, lr_decay_steps=6),
        data=data,
        run=info,
        device=torch.device("cpu"),
    )
    assert trainer.step == 6 and trainer.last_checkpoint == result.checkpoint
    saved_weights = load_file(str(result.checkpoint / "model.safetensors"))
    restored = trainer.model.state_dict()
    assert saved_weights.keys() <= restored.keys()
    assert all(torch.equal(restored[name], tensor) for name, tensor in saved_weights.items())
    saved_moments = load_tensors(result.checkpoint / "optimizer.pt")["state"]
    restored_moments = trainer.optimizer.state_dict()["state"]
    assert saved_moments.keys() == restored_moments.keys() and len(saved_moments) > 0
    for index, moments in saved_moments.items():
        assert torch.equal(restored_moments[index]["exp_avg"], moments["exp_avg"])
        assert restored_moments[index]["step"].item() == 6
    # The sample the run logged at step 6 comes back from the restored weights, draw for draw.
    logged = events_of(result.run_dir, "sample", "text")[6]
    assert trainer.sample() == logged


def test_loss_decreases_on_real_text(tmp_path, corpus_file):
    config = tiny_config(
        corpus_file,
        max_steps=150,
        learning_rate=3e-3,
        warmup_steps=10,
        dropout=0.0,
        eval_cadence=None,
        sampling_cadence=None,
    )
    result = run(config, tmp_path / "learn")
    losses = [loss for _, loss in sorted(step_losses(result.run_dir).items())]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 1.0, (first, last)  # from ~uniform over the vocabulary to real structure
