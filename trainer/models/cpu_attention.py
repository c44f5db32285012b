"""Causal attention for training the custom Transformer on a CPU, where torch's kernels are slow.

torch's CPU attention has two gaps that a training step pays for at every layer:

- ``scaled_dot_product_attention`` has no CPU kernel with dropout: its fallback materialises
  full (seq x seq) score, softmax and mask tensors for every head, in fp32 under autocast,
  half of them above the causal diagonal where every weight is zero;
- without dropout its fused kernel is fast forward but slow backward in bf16 (at 16 x 4
  heads x 256 positions x 64: about 2 ms forward, 19 ms forward + backward).

Both are replaced here by work in blocks of query rows, each against only the keys it may
see (5/8 of the full square at 256 positions):

- ``attention_with_dropout`` runs forward and backward in blocks. It keeps softmax in the
  compute dtype (bf16 under autocast, accumulated in fp32 inside the kernel; against float64
  the output is as close as with an fp32 softmax and the gradients within 20%, which a test
  holds it to), scales the scores inside their matrix multiplication and applies the dropout
  scale to the (seq x head_dim) output, not the (seq x seq) weights. Masks come from
  ``cpu_dropout.keep_mask``, in a fixed order.
- ``attention_with_blocked_backward`` (bf16, no dropout) keeps the fused kernel's forward,
  so its output is SDPA's bit for bit, and recomputes each block's probabilities in backward
  (scores and softmax in fp32, as SDPA has them; its gradients are as accurate as SDPA's,
  which a test holds it to): 12.8 ms forward + backward against 17.7 at the shape above
  (median, bench/attention.py, on an Intel Xeon with AMX), and 177 ms against 197 for a
  whole bf16 step of the default model. In fp32 the fused kernel is the faster (17.8 ms
  against 23.6), so fp32 keeps it.

``training_attention`` picks between them and the fused kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from trainer.models import cpu_dropout

# Query rows per block: measured fastest of 32/64/128/256 at 256 positions, in bf16 and fp32
# (smaller blocks skip more of the masked square but run more ops).
QUERY_BLOCK = 64


def training_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, attend: torch.Tensor | None = None
) -> torch.Tensor:
    """What ``F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=attend is
    None, dropout_p=p)`` computes, by the fastest route measured on the CPU, for training.
    (batch, heads, seq, head_dim) inputs; ``attend`` (batch, 1, seq, seq), True where a
    position may look, must be causal too, and let every position see at least itself (as
    ``within_examples`` makes it): a row that sees nothing has no softmax."""
    if p > 0:
        return attention_with_dropout(q, k, v, p, attend)
    if _compute_dtype(q) == torch.bfloat16:
        return attention_with_blocked_backward(q, k, v, attend)
    return fused_attention(q, k, v, attend)


def fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention without dropout through torch's fused kernel (SDPA), forward and backward."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=attend is None)


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, attend: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention dropping attention weights with probability ``p``, in blocks. Under
    autocast it runs in the autocast dtype, as SDPA would."""
    batch, heads, seq, head_dim = q.shape
    flat = [t.to(_compute_dtype(q)).reshape(batch * heads, seq, head_dim) for t in (q, k, v)]
    with torch.autocast("cpu", enabled=False):
        out = _BlockedAttentionWithDropout.apply(*flat, p, attend, heads)
    return out.view(batch, heads, seq, head_dim)


def attention_with_blocked_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention without dropout: SDPA's fused forward, a blocked backward. Under
    autocast it runs in the autocast dtype, as SDPA would."""
    dtype = _compute_dtype(q)
    with torch.autocast("cpu", enabled=False):
        return _FusedForwardBlockedBackward.apply(q.to(dtype), k.to(dtype), v.to(dtype), attend)


def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype


def _blocks(seq: int) -> Iterator[tuple[int, slice, slice]]:
    """(index, query rows, keys) of each block: a block's rows see keys 0 .. its last row."""
    for index, start in enumerate(range(0, seq, QUERY_BLOCK)):
        rows = slice(start, min(start + QUERY_BLOCK, seq))
        yield index, rows, slice(0, rows.stop)


def _packed_bias(attend: torch.Tensor, heads: int, rows: slice, dtype: torch.dtype) -> torch.Tensor:
    """What a block of query rows adds to its scores for rows of packed examples: 0 where a
    row may look, -inf where it may not, over the keys 0 .. rows.stop, per (batch x heads)."""
    allowed = attend[:, :, rows, : rows.stop]  # (batch, 1, rows, keys)
    bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))
    batch = bias.shape[0]
    return bias.expand(batch, heads, *bias.shape[2:]).reshape(batch * heads, *bias.shape[2:])


def _block_probabilities(q, k, rows: slice, keys: slice, attend: torch.Tensor | None, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + mask) for one block of query rows against its keys,
    on (batch x heads, seq, head_dim) tensors."""
    nothing = q.new_empty(())  # baddbmm's input, ignored with beta=0
    scale = 1.0 / math.sqrt(q.shape[2])
    scores = torch.baddbmm(nothing, q[:, rows], k[:, keys].transpose(1, 2), beta=0, alpha=scale)
    if attend is None:  # causal: only the block's own square has keys after a row
        square = scores[:, :, rows]
        square.masked_fill_(torch.ones(square.shape[1:], dtype=torch.bool).triu(1), float("-inf"))
    else:
        scores.add_(_packed_bias(attend, heads, rows, q.dtype))
    return torch.softmax(scores, dim=-1)


# A block's (probabilities, keep mask or None, dropped probabilities), for the backward.
BlockWeights = Callable[[int, slice, slice], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]


def _blocked_backward(q, k, v, grad_out: torch.Tensor, kept: float, weights: BlockWeights):
    """The gradients of q, k and v, (batch x heads, seq, head_dim) each, block by block.
    ``kept``: the dropout scale (1 without dropout)."""
    scale = 1.0 / math.sqrt(q.shape[2])
    with torch.autocast("cpu", enabled=False):
        grad_out = grad_out.to(q.dtype)
        nothing = q.new_empty(())  # baddbmm's input, ignored with beta=0
        grad_q = torch.empty_like(q)
        grad_k = torch.zeros_like(k)
        grad_v = torch.zeros_like(v)
        for index, rows, keys in _blocks(q.shape[1]):
            probs, keep, dropped = weights(index, rows, keys)
            grad_rows = grad_out[:, rows]
            # Each scale inside its matmul, so that no bf16 result is rounded twice.
            grad_v[:, keys].baddbmm_(dropped.transpose(1, 2), grad_rows, alpha=kept)
            grad_probs = torch.baddbmm(nothing, grad_rows, v[:, keys].transpose(1, 2), beta=0, alpha=kept)
            if keep is not None:
                grad_probs.mul_(keep)
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            grad_q[:, rows] = torch.baddbmm(nothing, grad_scores, k[:, keys], beta=0, alpha=scale)
            grad_k[:, keys].baddbmm_(grad_scores.transpose(1, 2), q[:, rows], alpha=scale)
    return grad_q, grad_k, grad_v


class _BlockedAttentionWithDropout(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) + mask) with dropout, times v, on (batch x heads, seq, head_dim)
    tensors of one dtype. Saves each block's probabilities, keep mask and dropped probabilities
    for backward (6 bytes a score in bf16, 12 in fp32), over each block's keys only."""

    @staticmethod
    def forward(ctx, q, k, v, p: float, attend: torch.Tensor | None, heads: int):
        kept = 1.0 / cpu_dropout.keep_probability(p)
        out = torch.empty_like(q)
        nothing = q.new_empty(())  # baddbmm's input, ignored with beta=0
        saved = []
        for _, rows, keys in _blocks(q.shape[1]):
            probs = _block_probabilities(q, k, rows, keys, attend, heads)
            keep = cpu_dropout.keep_mask(probs.shape, p, q.dtype)
            dropped = probs * keep
            # The dropout scale inside the matmul: on (seq x head_dim), and rounded once. Assigned,
            # not written with out=: torch.compile cannot trace out= into a strided slice.
            out[:, rows] = torch.baddbmm(nothing, dropped, v[:, keys], beta=0, alpha=kept)
            saved += [probs, keep, dropped]  # dropped too: recomputing it in backward is a pass
        ctx.save_for_backward(q, k, v, *saved)
        ctx.kept = kept
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, *saved = ctx.saved_tensors
        grads = _blocked_backward(q, k, v, grad_out, ctx.kept, lambda index, *_: saved[3 * index : 3 * index + 3])
        return *grads, None, None, None


class _FusedForwardBlockedBackward(torch.autograd.Function):
    """SDPA's forward on (batch, heads, seq, head_dim) tensors of one dtype; backward recomputes
    each block's probabilities from q and k (saving them would hold 2 bytes a score in bf16;
    recomputing costs one fp32 block matmul and softmax)."""

    @staticmethod
    def forward(ctx, q, k, v, attend: torch.Tensor | None):
        ctx.save_for_backward(q, k, v)
        ctx.attend = attend
        return fused_attention(q, k, v, attend)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v = ctx.saved_tensors
        batch, heads, seq, head_dim = q.shape
        q, k, v, grad_out = (t.reshape(batch * heads, seq, head_dim) for t in (q, k, v, grad_out))

        # Scores and softmax in fp32 (as SDPA's forward has them), rounded to bf16 only for the
        # matmuls: bf16 scores would carry an error that grows with their size into the
        # probabilities (measured with queries scaled 10x: gradients 1.7x SDPA's error, against 1.0x).
        exact = torch.promote_types(q.dtype, torch.float32)
        q_exact, k_exact = q.to(exact), k.to(exact)

        def recomputed(_, rows: slice, keys: slice):
            probs = _block_probabilities(q_exact, k_exact, rows, keys, ctx.attend, heads).to(q.dtype)
            return probs, None, probs

        grads = _blocked_backward(q, k, v, grad_out, 1.0, recomputed)
        return *(g.view(batch, heads, seq, head_dim) for g in grads), None
