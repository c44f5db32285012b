"""The custom model's CPU dropout: the masks it draws, and that the blocked attention computes
what dense attention computes with the same masks, forward and backward."""

import math

import pytest
import torch
import torch.nn.functional as F

import trainer.models.cpu_dropout as cpu_dropout
from trainer.models.transformer import CausalSelfAttention, TransformerShape, within_examples


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


def dense_attention(q, k, v, p, attend, masks):
    """Plain attention with the block masks laid into one (seq x seq) mask per head."""
    batch, heads, seq, head_dim = q.shape
    allowed = torch.ones(seq, seq, dtype=torch.bool).tril() if attend is None else attend
    scores = (q @ k.transpose(-2, -1) / math.sqrt(head_dim)).masked_fill(~allowed, float("-inf"))
    keep = torch.zeros(batch * heads, seq, seq, dtype=q.dtype)
    for start in range(0, seq, cpu_dropout.QUERY_BLOCK):
        stop = min(start + cpu_dropout.QUERY_BLOCK, seq)
        keep[:, start:stop, :stop] = masks[(batch * heads, stop - start, stop)].to(q.dtype)
    return (scores.softmax(-1) * keep.view(batch, heads, seq, seq) / cpu_dropout.keep_probability(p)) @ v


def test_keep_mask_drops_p_and_repeats_under_the_same_seed():
    torch.manual_seed(0)
    mask = cpu_dropout.keep_mask(torch.Size([1000, 1000]), 0.1, torch.bfloat16)
    assert mask.dtype == torch.bfloat16 and set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs((mask == 0).float().mean().item() - 0.1) < 0.002
    assert cpu_dropout.keep_probability(0.1) == pytest.approx(0.9, abs=1 / 65536)
    torch.manual_seed(0)
    assert torch.equal(mask, cpu_dropout.keep_mask(torch.Size([1000, 1000]), 0.1, torch.bfloat16))
    assert not torch.equal(mask, cpu_dropout.keep_mask(torch.Size([1000, 1000]), 0.1, torch.bfloat16))


def test_dropout_keeps_the_expectation_and_its_gradient_is_the_scaled_mask():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = cpu_dropout.dropout(x, 0.25)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.003
    assert torch.allclose(y[kept], torch.tensor(1 / cpu_dropout.keep_probability(0.25)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum)/dx is the mask times the scale: y itself here


def test_dropout_passes_gradcheck(fixed_masks):
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: cpu_dropout.dropout(x, 0.3), (x,))


# 150 positions: two full query blocks and a short last one; packed rows of 60 + 90 and 150.
PACKED = within_examples(torch.tensor([list(range(60)) + list(range(90)), list(range(150))]))


@pytest.mark.parametrize("attend", [None, PACKED], ids=["causal", "packed"])
def test_blocked_attention_is_dense_attention_with_the_same_masks(fixed_masks, attend):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 150, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = cpu_dropout.attention_with_dropout(q, k, v, 0.2, attend)
    expected = dense_attention(q, k, v, 0.2, attend, fixed_masks)
    assert torch.allclose(out, expected, atol=1e-12)
    grad = torch.randn_like(out)
    for got, want in zip(
        torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(expected, (q, k, v), grad), strict=True
    ):
        assert torch.allclose(got, want, atol=1e-12)
    # gradcheck perturbs every input element: one row, two heads, 70 positions (two blocks).
    small = [t[:1, :2, :70, :2].detach().requires_grad_() for t in (q, k, v)]
    mask = None if attend is None else attend[:1, :, :70, :70]
    assert torch.autograd.gradcheck(lambda q, k, v: cpu_dropout.attention_with_dropout(q, k, v, 0.2, mask), small)


def test_blocked_attention_without_drops_is_sdpa(monkeypatch):
    monkeypatch.setattr(cpu_dropout, "keep_mask", lambda shape, p, dtype: torch.ones(shape, dtype=dtype))
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 100, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True) / cpu_dropout.keep_probability(0.5)
    assert torch.allclose(cpu_dropout.attention_with_dropout(q, k, v, 0.5), expected, atol=1e-5)


def test_blocked_attention_runs_in_the_autocast_dtype_close_to_fp32(fixed_masks):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 100, 16, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cpu_dropout.attention_with_dropout(q, k, v, 0.1)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert q.grad.dtype == torch.float32  # autograd returns gradients in the inputs' dtype
    expected = dense_attention(q.detach(), k.detach(), v.detach(), 0.1, None, fixed_masks)
    assert torch.allclose(out.float(), expected, atol=0.05)
    assert (out.float() - expected).abs().mean() < 0.01


def test_the_model_uses_the_blocked_attention_only_to_train_on_the_cpu(monkeypatch):
    shape = TransformerShape(vocab_size=11, n_layers=1, d_model=16, n_heads=2, d_ff=32, max_seq_len=8, dropout=0.5)
    attention = CausalSelfAttention(shape)
    calls = []
    real = cpu_dropout.attention_with_dropout
    monkeypatch.setattr(cpu_dropout, "attention_with_dropout", lambda *a: calls.append(a) or real(*a))
    x = torch.randn(2, 8, 16)
    attention.train()(x)
    assert len(calls) == 1 and calls[0][3] == 0.5
    attention.eval()(x)
    assert len(calls) == 1  # evaluation: no dropout, SDPA's fused kernel
