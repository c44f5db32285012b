"""Tiny runs that end each way a run can end: completed, interrupted (a signal), failed (a NaN loss)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_config
from trainer.errors import NonFiniteLossError, TrainingInterrupted
from trainer.run.execute import run_training
from trainer.training.loop import Trainer


def train(run_dir: Path, corpus_file: Path, **changes):
    run_dir.mkdir(parents=True, exist_ok=True)
    values = dict(max_steps=6, eval_cadence=3, sampling_cadence=None)
    return run_training(tiny_config(corpus_file, **{**values, **changes}), run_dir, console=False)


def completed_run(run_dir: Path, corpus_file: Path, **changes) -> Path:
    assert train(run_dir, corpus_file, **changes).status == "completed"
    return run_dir


def _misbehave_at(monkeypatch, at_step: int, act) -> None:
    original = Trainer.training_step

    def training_step(self, batch):
        if self.step + 1 == at_step:
            act(self)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "training_step", training_step)


def interrupted_run(run_dir: Path, corpus_file: Path, monkeypatch, at_step: int = 4) -> Path:
    """Ctrl-C arrives during step ``at_step``: the run saves a checkpoint after it and stops."""

    def ctrl_c(trainer):
        trainer._stop_signal = "SIGINT"

    with monkeypatch.context() as patch:
        _misbehave_at(patch, at_step, ctrl_c)
        with pytest.raises(TrainingInterrupted):
            train(run_dir, corpus_file)
    return run_dir


def failed_run(run_dir: Path, corpus_file: Path, monkeypatch, at_step: int = 3) -> Path:
    """The loss of step ``at_step`` is NaN: the run stops there, failed (exit 4)."""

    def poison(trainer):
        original = trainer.adapter.loss_sum
        trainer.adapter.loss_sum = lambda *batch: original(*batch) * float("nan")

    with monkeypatch.context() as patch:
        _misbehave_at(patch, at_step, poison)
        with pytest.raises(NonFiniteLossError):
            train(run_dir, corpus_file)
    return run_dir
