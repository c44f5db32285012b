"""Rows of packed examples: attention never crosses from one example into another, so a
packed row scores each example exactly as that example alone would be scored."""

import pytest
import torch

from trainer.data.char_tokenizer import CharTokenizer
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.transformer import TransformerShape

FIRST = [3, 1, 4, 1, 5]
SECOND = [2, 6, 5, 3, 5, 8, 7]


def packed_row():
    tokens = torch.tensor([FIRST + SECOND])
    positions = torch.tensor([list(range(len(FIRST))) + list(range(len(SECOND)))])
    return tokens, positions


def loss_sum(adapter, tokens, positions=None):
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    if positions is not None:
        positions = positions[:, :-1]
        targets[0, len(FIRST) - 1] = -100  # the last token of one example does not predict the next's first
    with torch.no_grad():
        return float(adapter.loss_sum(inputs, targets, positions))


def assert_each_example_scored_alone(adapter):
    tokens, positions = packed_row()
    alone = loss_sum(adapter, torch.tensor([FIRST])) + loss_sum(adapter, torch.tensor([SECOND]))
    assert loss_sum(adapter, tokens, positions) == pytest.approx(alone, rel=1e-5)
    # Without the positions the row is one sequence: the second example sees the first.
    assert loss_sum(adapter, tokens) != pytest.approx(alone, rel=1e-3)


def custom_adapter(dropout: float) -> CustomTransformerAdapter:
    tokenizer = CharTokenizer.from_text("abcdefghij")
    shape = TransformerShape(
        tokenizer.vocab_size, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_seq_len=16, dropout=dropout
    )
    torch.manual_seed(0)
    return CustomTransformerAdapter.new(shape, tokenizer)


def test_the_custom_transformer_keeps_packed_examples_apart():
    adapter = custom_adapter(dropout=0.0)
    adapter.model.eval()
    assert_each_example_scored_alone(adapter)


def test_the_custom_transformers_cpu_dropout_attention_keeps_them_apart_too():
    """Training with dropout on the CPU takes another attention path: no gradient may reach
    the first example from the second's logits."""
    adapter = custom_adapter(dropout=0.3)
    adapter.model.train()
    tokens, positions = packed_row()
    kept = {}
    handle = adapter.model.token_embedding.register_forward_hook(
        lambda m, i, out: kept.update(x=out) or out.retain_grad()
    )
    logits, _ = adapter.model(tokens, None, positions)
    handle.remove()
    logits[:, len(FIRST) :].sum().backward()
    grad = kept["x"].grad[0]
    assert torch.all(grad[: len(FIRST)] == 0) and torch.any(grad[len(FIRST) :] != 0)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_hugging_face_model_keeps_packed_examples_apart(tiny_qwen_dir, attention):
    from trainer.models.hf_adapter import HFCausalLMAdapter

    adapter = HFCausalLMAdapter.load(tiny_qwen_dir, "qwen")
    adapter.model.set_attn_implementation(attention)
    assert adapter.model.config._attn_implementation == attention
    adapter.model.eval()
    assert_each_example_scored_alone(adapter)
