"""The learning-rate schedule: linear warmup, then cosine decay to a floor (or constant).

The schedule is a pure function of the step, so resuming needs no scheduler state. Its length
is ``lr_decay_steps``, fixed when a run is planned (trainer/run/plan.py), so stopping early with
--max-steps and resuming later gives the rates of one uninterrupted run.
"""

from __future__ import annotations

import math

import torch

from trainer.config.schema import TrainingConfig


def lr_at(step: int, config: TrainingConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then constant or cosine decay to
    ``min_lr_ratio * learning_rate`` at ``lr_decay_steps`` (default: max_steps), flat after.
    """
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return peak
    floor = peak * config.min_lr_ratio
    decay_steps = config.lr_decay_steps or config.max_steps
    span = max(1, decay_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
