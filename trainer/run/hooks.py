"""The hooks a run gets: the console, events.jsonl, loss.png, the trackers, evaluation, sampling
and checkpoints."""

from __future__ import annotations

from trainer.run.console import ConsoleHook
from trainer.run.events import EventLog, EventLogHook
from trainer.run.loggers import tracker_hooks
from trainer.run.plots import LossPlotHook
from trainer.training.hooks import CheckpointHook, EvalHook, Hook, SamplingHook


def default_hooks(trainer_config, events: EventLog | None, start_step: int, console: bool = True) -> list[Hook]:
    """The standard hook list for a run. Evaluation and sampling act at their cadences and,
    whatever the cadences (null included), once at the end: a run always ends by saying what
    it learned, one validation loss and one sample.

    ``events`` None: a DDP rank other than 0, which keeps only the hooks every rank must run
    together (evaluation and checkpoints are collective; under FSDP sampling as well) and
    reports to no one.
    """
    hooks: list[Hook] = []
    if console:
        hooks.append(ConsoleHook(trainer_config.max_steps, start_step))
    if events is not None:
        hooks.append(EventLogHook(events))
        hooks.append(LossPlotHook())  # after the event log: it draws from events.jsonl
        hooks += tracker_hooks(trainer_config.loggers)  # after loss.png: MLflow keeps it as an artifact
    hooks.append(EvalHook(trainer_config.eval_cadence))
    # Under FSDP sampling is collective too: every forward gathers each block's weights from
    # all ranks, so the others sample along (the same text: the same seed) and discard it.
    if events is not None or trainer_config.strategy == "fsdp":
        hooks.append(SamplingHook(trainer_config.sampling_cadence))
    hooks.append(CheckpointHook(trainer_config.checkpoint_cadence))
    return hooks
