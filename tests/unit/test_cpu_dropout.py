"""The custom model's CPU dropout: the masks it draws, and dropout with them."""

import pytest
import torch

import trainer.models.cpu_dropout as cpu_dropout


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
