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


def laid_out_masks(masks, batch: int, heads: int, seq: int, dtype: torch.dtype) -> torch.Tensor:
    """The blocks' keep masks laid into one (seq x seq) mask per head, 0 beyond each block's keys."""
    keep = torch.zeros(batch * heads, seq, seq, dtype=dtype)
    for start in range(0, seq, cpu_dropout.QUERY_BLOCK):
        stop = min(start + cpu_dropout.QUERY_BLOCK, seq)
        keep[:, start:stop, :stop] = masks[(batch * heads, stop - start, stop)].to(dtype)
    return keep.view(batch, heads, seq, seq)


def dense_attention(q, k, v, p, attend, masks):
    """Plain attention with the block masks laid into one (seq x seq) mask per head."""
    batch, heads, seq, head_dim = q.shape
    allowed = torch.ones(seq, seq, dtype=torch.bool).tril() if attend is None else attend
    scores = (q @ k.transpose(-2, -1) / math.sqrt(head_dim)).masked_fill(~allowed, float("-inf"))
    keep = laid_out_masks(masks, batch, heads, seq, q.dtype)
    return (scores.softmax(-1) * keep / cpu_dropout.keep_probability(p)) @ v


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_keep_probability_is_an_exact_multiple_of_one_in_65536_nearest_to_1_minus_p(p):
    kept = cpu_dropout.keep_probability(p)
    assert (kept * 65536).is_integer()
    assert abs(kept - (1 - p)) <= 1 / 131072


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


def heads_view(batch: int, heads: int, seq: int, head_dim: int, dtype=torch.float64) -> torch.Tensor:
    """(batch, heads, seq, head_dim) as the model makes it: a transposed, non-contiguous view."""
    return torch.randn(batch, seq, heads, head_dim, dtype=dtype).transpose(1, 2).requires_grad_()


@pytest.mark.parametrize(
    "seq, attend", [(1, None), (64, None), (150, None), (150, PACKED)], ids=["1", "64", "150", "150-packed"]
)
def test_blocked_attention_is_dense_attention_with_the_same_masks(fixed_masks, seq, attend):
    torch.manual_seed(0)
    q, k, v = (heads_view(2, 3, seq, 8) for _ in range(3))
    out = cpu_dropout.attention_with_dropout(q, k, v, 0.2, attend)
    expected = dense_attention(q, k, v, 0.2, attend, fixed_masks)
    assert torch.allclose(out, expected, atol=1e-12)
    grad = torch.randn(2, seq, 3, 8, dtype=torch.float64).transpose(1, 2)  # non-contiguous too
    got, want = torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(expected, (q, k, v), grad)
    for mine, theirs in zip(got, want, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-12)


@pytest.mark.parametrize("attend", [None, PACKED[:1, :, :70, :70]], ids=["causal", "packed"])
def test_blocked_attention_passes_gradcheck(fixed_masks, attend):
    # gradcheck perturbs every input element: one row, two heads, 70 positions (two blocks).
    torch.manual_seed(0)
    q, k, v = (heads_view(1, 2, 70, 2) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: cpu_dropout.attention_with_dropout(q, k, v, 0.2, attend), (q, k, v))


def test_only_the_inputs_that_need_a_gradient_get_one(fixed_masks):
    q, k, v = heads_view(1, 2, 70, 4), heads_view(1, 2, 70, 4).detach(), heads_view(1, 2, 70, 4)
    cpu_dropout.attention_with_dropout(q, k, v, 0.2).sum().backward()
    assert q.grad is not None and v.grad is not None and k.grad is None


def test_blocked_attention_without_drops_is_sdpa(monkeypatch):
    monkeypatch.setattr(cpu_dropout, "keep_mask", lambda shape, p, dtype: torch.ones(shape, dtype=dtype))
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 100, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True) / cpu_dropout.keep_probability(0.5)
    assert torch.allclose(cpu_dropout.attention_with_dropout(q, k, v, 0.5), expected, atol=1e-5)


def relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.double() - exact).norm() / exact.norm()).item()


def test_blocked_attention_in_bf16_is_as_accurate_as_an_fp32_softmax(fixed_masks):
    """Under autocast the blocked attention keeps its probabilities in bf16. Against float64,
    its output and gradients must be about as close as unfused autocast attention's, whose
    softmax runs in fp32 (scores and probabilities rounded to bf16 only for the matmuls).
    Measured: output 0.41% vs 0.42%, gradients of q, k, v 0.53/0.57/0.48% vs 0.51/0.50/0.42%."""
    torch.manual_seed(0)
    batch, heads, seq, head_dim, p = 2, 4, 150, 32, 0.1
    q, k, v = (heads_view(batch, heads, seq, head_dim, torch.float32) for _ in range(3))
    grad = torch.randn(batch, heads, seq, head_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cpu_dropout.attention_with_dropout(q, k, v, p)
    assert out.dtype == torch.bfloat16
    blocked = [out, *torch.autograd.grad(out.float(), (q, k, v), grad)]
    assert all(g.dtype == torch.float32 for g in blocked[1:])  # the inputs' dtype

    exact_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    exact_out = dense_attention(*exact_inputs, p, None, fixed_masks)
    exact = [exact_out, *torch.autograd.grad(exact_out, exact_inputs, grad.double())]

    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    scores = (low[0] @ low[1].transpose(-2, -1)).float() / math.sqrt(head_dim)
    scores = scores.masked_fill(~torch.ones(seq, seq, dtype=torch.bool).tril(), float("-inf"))
    keep = laid_out_masks(fixed_masks, batch, heads, seq, torch.float32)
    weights = scores.softmax(-1) * keep / cpu_dropout.keep_probability(p)
    fp32_out = weights.bfloat16() @ low[2]
    fp32_softmax = [fp32_out, *torch.autograd.grad(fp32_out.float(), low, grad)]

    (out_error, fp32_out_error), *grad_errors = [
        (relative_error(mine, truth), relative_error(theirs, truth))
        for mine, theirs, truth in zip(blocked, fp32_softmax, exact, strict=True)
    ]
    assert out_error <= 1.02 * fp32_out_error
    assert all(mine <= 1.2 * theirs for mine, theirs in grad_errors)


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
