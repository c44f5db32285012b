"""Fixtures of the unit tests: the command line run in this process, and fixed dropout masks."""

import logging

import pytest
import torch

import trainer.models.cpu_dropout as cpu_dropout


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


@pytest.fixture
def fixed_masks(monkeypatch):
    """keep_mask returning one fixed random mask per shape, so that a reference computation and
    gradcheck's repeated forwards all see the masks the blocked attention used."""
    masks = {}

    def fixed(shape, p, dtype):
        key = tuple(shape)
        if key not in masks:
            masks[key] = torch.rand(key, generator=torch.Generator().manual_seed(len(masks))) >= p
        return masks[key].to(dtype)

    monkeypatch.setattr(cpu_dropout, "keep_mask", fixed)
    return masks
