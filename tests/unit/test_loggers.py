"""Trackers fed from the events: what each shows equals events.jsonl, and a resume continues
the same tracker run without repeating steps."""

import csv
import logging
import shutil
import sys
import time

import numpy as np
import pytest

from tests.conftest import read_events, tiny_config
from trainer.config.compose import ConfigLayer
from trainer.config.schema import LOGGERS
from trainer.errors import MissingExtraError
from trainer.run.execute import run_training
from trainer.run.history import load_history
from trainer.run.loggers import LOGGER_CLASSES
from trainer.run.loggers.csv_logger import COLUMNS, CsvLogger
from trainer.run.plan import plan_run


def train(run_dir, corpus_file, loggers, **changes):
    run_dir.mkdir(parents=True, exist_ok=True)
    values = dict(max_steps=6, eval_cadence=3, sampling_cadence=3, checkpoint_cadence=3, loggers=loggers)
    return run_training(tiny_config(corpus_file, **{**values, **changes}), run_dir, console=False)


def killed_after_the_last_step_and_resumed(run_dir, max_steps=9):
    """As if the process had been killed before its final checkpoint: the run resumes from
    step 3 and repeats steps 4 to 6 (its trackers saw them once already)."""
    shutil.rmtree(run_dir / "checkpoints" / "step-00000006")
    config, plan = plan_run([ConfigLayer("test", {"resume": str(run_dir), "max_steps": max_steps})])
    assert plan.continue_in == run_dir and plan.state["step"] == 3
    return run_training(config, run_dir, resume=plan, console=False)


def test_every_logger_named_in_the_schema_has_a_tracker():
    assert tuple(LOGGER_CLASSES) == LOGGERS


# --- TensorBoard -----------------------------------------------------------------------


def tensorboard_scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def as_stored(values):
    """TensorBoard keeps scalars as float32."""
    return [float(np.float32(v)) for v in values]


def test_tensorboard_scalars_equal_the_events_and_a_resume_repeats_no_step(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    train(run_dir, corpus_file, ["tensorboard"])
    history = load_history(run_dir)
    for tag, (steps, values) in {
        "train/loss": history.train("loss"),
        "train/lr": history.train("lr"),
        "train/grad_norm": history.train("grad_norm"),
        "val/loss": history.val(),
    }.items():
        assert tensorboard_scalars(run_dir, tag) == list(zip(steps, as_stored(values), strict=True)), tag

    killed_after_the_last_step_and_resumed(run_dir)
    steps, losses = load_history(run_dir).train("loss")
    assert steps == list(range(1, 10))
    assert tensorboard_scalars(run_dir, "train/loss") == list(zip(steps, as_stored(losses), strict=True))
    # One directory; the resumed writer marks the step from which the killed writer's lines are void.
    first, second = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert purge_steps(first) == [] and purge_steps(second) == [4]


def purge_steps(event_file):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return [
        event.step
        for event in EventFileLoader(str(event_file)).Load()
        if event.HasField("session_log") and event.session_log.status == SessionLog.START
    ]


# --- MLflow --------------------------------------------------------------------------


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_mlflow_metrics_params_tags_and_artifacts_from_a_local_store(tmp_path, corpus_file, mlflow_store):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    train(run_dir, corpus_file, ["mlflow"])
    client = MlflowClient(mlflow_store)
    (found,) = client.search_runs([client.get_experiment_by_name("lmrunner").experiment_id])
    run_id = found.info.run_id
    history = load_history(run_dir)
    for key, (steps, values) in {"train/loss": history.train("loss"), "val/loss": history.val()}.items():
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert logged == list(zip(steps, values, strict=True)), key
    assert found.info.status == "FINISHED" and found.info.run_name == str(run_dir)
    assert found.data.params["learning_rate"] == str(tiny_config(corpus_file).learning_rate)
    assert found.data.tags["lmrunner.run_dir"] == str(run_dir.resolve())
    assert found.data.tags["lmrunner.run_id"] == read_events(run_dir)[0]["run_id"]
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "samples")
    }
    assert {"config.yaml", "loss.png", "samples/step-00000003.txt", "samples/step-00000006.txt"} <= artifacts

    killed_after_the_last_step_and_resumed(run_dir)
    (again,) = client.search_runs([found.info.experiment_id])
    assert again.info.run_id == run_id and again.info.status == "FINISHED"  # the same MLflow run
    logged_steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert logged_steps == set(range(1, 10))


# --- W&B -----------------------------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def wandb_history(offline_run_dir):
    """The history rows of an offline W&B run, read from its .wandb file (W&B's record log:
    a 7-byte header, then 32 KiB blocks of records, each with a 7-byte header of its own)."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = offline_run_dir.glob("run-*.wandb")
    data, position, chunk, rows = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (length == 0 and kind == 0):  # the padding at a block's end
            position += left
            continue
        chunk += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows


def test_wandb_runs_offline_with_no_account_and_resumes_the_same_run_id(tmp_path, corpus_file, wandb_offline):
    run_dir = tmp_path / "run"
    train(run_dir, corpus_file, ["wandb"])
    run_id = read_events(run_dir)[0]["run_id"]
    (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    steps, losses = load_history(run_dir).train("loss")
    logged = {row["_step"]: row["train/loss"] for row in wandb_history(offline) if "train/loss" in row}
    assert logged == dict(zip(steps, losses, strict=True))

    # W&B names an offline run's directory by the second it starts: a resumed process starts
    # seconds later (importing torch alone takes longer), this in-process one might not.
    time.sleep(1.0 - time.time() % 1.0 + 0.05)
    killed_after_the_last_step_and_resumed(run_dir)
    resumed = [d for d in (run_dir / "wandb").glob(f"offline-run-*-{run_id}") if d != offline]
    assert len(resumed) == 1  # the same W&B run id, continued
    again = {row["_step"]: row["train/loss"] for row in wandb_history(resumed[0]) if "train/loss" in row}
    steps, losses = load_history(run_dir).train("loss")
    assert again == dict(zip(steps[3:], losses[3:], strict=True))


# --- CSV -----------------------------------------------------------------------------


def csv_rows(run_dir):
    with (run_dir / "metrics.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_csv_has_a_row_per_step_with_the_validation_loss_on_its_step(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    train(run_dir, corpus_file, ["csv"])
    columns, rows = csv_rows(run_dir)
    assert tuple(columns) == COLUMNS
    history = load_history(run_dir)
    steps, losses = history.train("loss")
    assert [int(r["step"]) for r in rows] == steps and [float(r["loss"]) for r in rows] == losses
    assert {int(r["step"]): float(r["val_loss"]) for r in rows if r["val_loss"]} == dict(
        zip(*history.val(), strict=True)
    )
    assert [int(r["tokens_seen"]) for r in rows] == [s * 8 * 32 for s in steps]

    killed_after_the_last_step_and_resumed(run_dir)
    _, rows = csv_rows(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 10))  # steps 4-6 once, as the resumed run logged them


# --- failures ------------------------------------------------------------------------


def test_a_logger_without_its_package_is_refused_before_any_run_directory(
    tmp_path, corpus_file, monkeypatch, capsys, cli
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    with pytest.raises(MissingExtraError) as info:
        plan_run([ConfigLayer("test", {"loggers": ["csv", "tensorboard"], "data_path": str(corpus_file)})])
    assert info.value.exit_code == 2 and info.value.key == "loggers"

    monkeypatch.chdir(tmp_path)
    assert cli(["--data", str(corpus_file), "--max-steps", "1", "loggers=[tensorboard]"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: loggers: tensorboard needs the optional package 'tensorboard'")
    assert 'pip install -e ".[tensorboard]"' in line
    assert not (tmp_path / "outputs").exists()


def test_a_tracker_that_fails_stops_itself_and_not_the_run(tmp_path, corpus_file, monkeypatch, caplog):
    def broken(self, step, scalars):
        raise OSError("the tracking server went away")

    monkeypatch.setattr(CsvLogger, "log_scalars", broken)
    with caplog.at_level(logging.WARNING, logger="lmrunner"):
        result = train(tmp_path / "run", corpus_file, ["csv"])
    assert result.status == "completed"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("csv")]
    assert line == "csv stopped logging: the tracking server went away (events.jsonl keeps the full record)"
