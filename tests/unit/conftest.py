"""Fixtures of the unit tests that drive the command line in this process."""

import logging

import pytest


@pytest.fixture
def cli():
    """``trainer.cli.main.main``, run in this process. main() puts the console handler on the
    lmrunner logger; it is taken off again afterwards, so later tests see no console lines."""
    from trainer.cli.main import main

    logger = logging.getLogger("lmrunner")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield main
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
