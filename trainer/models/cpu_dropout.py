"""Dropout on the CPU, for the custom Transformer: torch's dropout, in fewer passes over memory.

On a CPU a training step of the default model is bound by passes over its activations, not
by its matrix multiplications. torch's CPU dropout draws a Bernoulli sample per element
(measured 2.6x to 5x slower than drawing the masks here) and masks and scales in passes of
their own; unfused attention with dropout (SDPA has no CPU kernel for it) adds full
(seq x seq) score, softmax and mask tensors for every head, in fp32 under autocast, half of
them above the causal diagonal where every weight is zero. Here:

- a mask element is sixteen random bits (one 64-bit draw yields four), compared straight
  into a 0/1 tensor of the activation's dtype; the drop probability becomes a multiple of
  1/65536 and the scale matches it exactly;
- ``dropout`` scales and masks in one pass forward and one backward (``addcmul``);
- ``attention_with_dropout`` works through blocks of query rows, each against only the keys
  it may see (5/8 of the full square at 256 positions), keeps softmax in the compute dtype
  (bf16 under autocast, accumulated in fp32 inside the kernel; against float64 the output
  is as close as with an fp32 softmax and the gradients within 20%, measured 4 to 14%, which
  a test holds it to), scales the scores inside their matrix multiplication and applies
  the dropout scale to the (seq x head_dim) output, not the (seq x seq) weights.

Masks come from torch's default CPU generator in a fixed order, so a run resumed from a
checkpoint (which restores that generator) draws the same masks, and activation
checkpointing (which restores it around its rerun) recomputes the same ones.
"""

from __future__ import annotations

import math

import torch

# Query rows per block of attention_with_dropout: measured fastest of 32/64/128/256 at 256
# positions, in bf16 and fp32 (smaller blocks skip more of the masked square but run more ops).
QUERY_BLOCK = 64


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


def _packed_bias(attend: torch.Tensor, heads: int, rows: slice, dtype: torch.dtype) -> torch.Tensor:
    """What a block of query rows adds to its scores for rows of packed examples: 0 where a
    row may look, -inf where it may not, over the keys 0 .. rows.stop, per (batch x heads)."""
    allowed = attend[:, :, rows, : rows.stop]  # (batch, 1, rows, keys)
    bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))
    batch = bias.shape[0]
    return bias.expand(batch, heads, *bias.shape[2:]).reshape(batch * heads, *bias.shape[2:])


class _BlockedAttentionWithDropout(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) + mask) with dropout, times v, on (batch x heads, seq, head_dim)
    tensors of one dtype. Saves each block's probabilities, keep mask and dropped probabilities
    for backward (6 bytes a score in bf16, 12 in fp32), over each block's keys only."""

    @staticmethod
    def forward(ctx, q, k, v, p: float, attend: torch.Tensor | None, heads: int):
        seq, head_dim = q.shape[1], q.shape[2]
        scale = 1.0 / math.sqrt(head_dim)
        kept = 1.0 / keep_probability(p)
        out = torch.empty_like(q)
        nothing = q.new_empty(())  # baddbmm's input, ignored with beta=0
        saved = []
        for start in range(0, seq, QUERY_BLOCK):
            rows = slice(start, min(start + QUERY_BLOCK, seq))
            keys = slice(0, rows.stop)  # later keys are masked for every row of the block
            scores = torch.baddbmm(nothing, q[:, rows], k[:, keys].transpose(1, 2), beta=0, alpha=scale)
            if attend is None:  # causal: only the block's own square has keys after a row
                square = scores[:, :, rows]
                square.masked_fill_(torch.ones(square.shape[1:], dtype=torch.bool).triu(1), float("-inf"))
            else:
                scores.add_(_packed_bias(attend, heads, rows, q.dtype))
            probs = torch.softmax(scores, dim=-1)
            keep = keep_mask(probs.shape, p, q.dtype)
            dropped = probs * keep
            # The dropout scale inside the matmul: on (seq x head_dim), and rounded once. Assigned,
            # not written with out=: torch.compile cannot trace out= into a strided slice.
            out[:, rows] = torch.baddbmm(nothing, dropped, v[:, keys], beta=0, alpha=kept)
            saved += [probs, keep, dropped]  # dropped too: recomputing it in backward is a pass
        ctx.save_for_backward(q, k, v, *saved)
        ctx.scale, ctx.kept = scale, kept
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, *saved = ctx.saved_tensors
        seq = q.shape[1]
        with torch.autocast("cpu", enabled=False):
            grad_out = grad_out.to(q.dtype)
            nothing = q.new_empty(())  # baddbmm's input, ignored with beta=0
            grad_q = torch.empty_like(q)
            grad_k = torch.zeros_like(k)
            grad_v = torch.zeros_like(v)
            for index, start in enumerate(range(0, seq, QUERY_BLOCK)):
                rows = slice(start, min(start + QUERY_BLOCK, seq))
                keys = slice(0, rows.stop)
                probs, keep, dropped = saved[3 * index : 3 * index + 3]
                grad_rows = grad_out[:, rows]
                # Each scale inside its matmul, so that no bf16 result is rounded twice.
                grad_v[:, keys].baddbmm_(dropped.transpose(1, 2), grad_rows, alpha=ctx.kept)
                grad_probs = torch.baddbmm(nothing, grad_rows, v[:, keys].transpose(1, 2), beta=0, alpha=ctx.kept)
                grad_scores = torch._softmax_backward_data(grad_probs.mul_(keep), probs, -1, probs.dtype)
                grad_q[:, rows] = torch.baddbmm(nothing, grad_scores, k[:, keys], beta=0, alpha=ctx.scale)
                grad_k[:, keys].baddbmm_(grad_scores.transpose(1, 2), q[:, rows], alpha=ctx.scale)
        return grad_q, grad_k, grad_v, None, None, None


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, attend: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention of (batch, heads, seq, head_dim) queries, keys and values, dropping
    attention weights with probability ``p``: what ``F.scaled_dot_product_attention(q, k, v,
    attn_mask=attend, is_causal=attend is None, dropout_p=p)`` computes. ``attend`` (batch, 1,
    seq, seq) must be causal too (True where a position may look). Under autocast it runs in
    the autocast dtype, as SDPA would."""
    batch, heads, seq, head_dim = q.shape
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    flat = [t.to(dtype).reshape(batch * heads, seq, head_dim) for t in (q, k, v)]
    with torch.autocast("cpu", enabled=False):
        out = _BlockedAttentionWithDropout.apply(*flat, p, attend, heads)
    return out.view(batch, heads, seq, head_dim)
