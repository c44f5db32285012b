"""Trackers a run reports to besides events.jsonl (the ``loggers`` setting): TensorBoard, MLflow,
W&B and a CSV file. Each is a hook fed from the reported events (base.py); the tracker
libraries are optional extras, checked while the run is planned and imported when it starts.
"""

from __future__ import annotations

from trainer.run.loggers.base import TrackerHook
from trainer.run.loggers.csv_logger import CsvLogger
from trainer.run.loggers.mlflow_logger import MlflowLogger
from trainer.run.loggers.tensorboard_logger import TensorBoardLogger
from trainer.run.loggers.wandb_logger import WandbLogger

LOGGER_CLASSES: dict[str, type[TrackerHook]] = {
    logger.name: logger for logger in (TensorBoardLogger, MlflowLogger, WandbLogger, CsvLogger)
}


def check_loggers(names: list[str]) -> None:
    """A logger whose package is missing: MissingExtraError (exit 2) naming the extra."""
    for name in names:
        LOGGER_CLASSES[name].check_installed()


def tracker_hooks(names: list[str]) -> list[TrackerHook]:
    return [LOGGER_CLASSES[name]() for name in names]
