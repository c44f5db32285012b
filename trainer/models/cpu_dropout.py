"""Dropout on the CPU, for the custom Transformer: torch's dropout, in fewer passes over memory.

On a CPU a training step of the default model is bound by passes over its activations, not
by its matrix multiplications. torch's CPU dropout draws a Bernoulli sample per element
(measured 2.6x to 5x slower than drawing the masks here) and masks and scales in passes of
their own. Here:

- a mask element is sixteen random bits (one 64-bit draw yields four), compared straight
  into a 0/1 tensor of the activation's dtype; the drop probability becomes a multiple of
  1/65536 and the scale matches it exactly;
- ``dropout`` scales and masks in one pass forward and one backward (``addcmul``).

Attention's dropout draws its masks here too (trainer/models/cpu_attention.py). Masks come
from torch's default CPU generator in a fixed order, so a run resumed from a checkpoint
(which restores that generator) draws the same masks, and activation checkpointing (which
restores it around its rerun) recomputes the same ones.
"""

from __future__ import annotations

import math

import torch


def _threshold(p: float) -> int:
    """int16 random values below this are dropped: round(p * 65536) of the 65536 values."""
    return round(p * 65536) - 32768


def keep_probability(p: float) -> float:
    """The probability an element is kept, exactly, for the drop probability ``p``."""
    return (32768 - _threshold(p)) / 65536


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """1 where an element is kept, 0 where it is dropped (unscaled), in ``dtype``."""
    count = math.prod(shape)
    draws = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)
    bits = draws.view(torch.int16)[:count].view(shape)
    # Comparing into a float tensor is one pass; a bool mask converted after it is two more.
    return torch.ge(bits, _threshold(p), out=torch.empty(shape, dtype=dtype))


class _MaskAndScale(torch.autograd.Function):
    """x * keep * scale, forward and backward each one pass (autograd's mul chain is two)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None, None


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of ``x`` with drop probability ``p`` (0 < p < 1)."""
    return _MaskAndScale.apply(x, keep_mask(x.shape, p, x.dtype), 1.0 / keep_probability(p))
