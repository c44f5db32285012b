"""The console: log lines that do not tear through the progress bar, one console under torchrun."""

from __future__ import annotations

import logging
import os
import sys


class _TqdmHandler(logging.Handler):
    """Console log lines written through tqdm, so the progress bar is redrawn below them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def setup_console_logging() -> None:
    logger = logging.getLogger("lmrunner")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # Hydra puts a handler on the root logger: do not print twice
    if not any(isinstance(handler, _TqdmHandler) for handler in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def init_distributed() -> None:
    """Under torchrun, join the process group before anything is decided (the run directory
    is rank 0's to choose); a plain run is rank 0 of 1 and this does nothing."""
    if "WORLD_SIZE" in os.environ:
        from trainer.training.distributed import init_from_env

        if not init_from_env().is_main:  # one console: rank 0's (each rank's errors still show)
            logging.getLogger("lmrunner").setLevel(logging.ERROR)
