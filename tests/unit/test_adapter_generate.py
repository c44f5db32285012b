"""Both adapters generate with the same options: seeded, top-k/top-p, streamed, stopping at EOS."""

import pytest
import torch

from trainer.data.char_tokenizer import CharTokenizer
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.hf_adapter import HFCausalLMAdapter
from trainer.models.transformer import TransformerShape

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf(tiny_qwen_dir):
    return HFCausalLMAdapter.load(tiny_qwen_dir, "qwen")


@pytest.fixture(scope="module")
def custom():
    tokenizer = CharTokenizer.from_text("abcdefgh ")
    shape = TransformerShape(
        tokenizer.vocab_size, n_layers=1, d_model=16, n_heads=2, d_ff=32, max_seq_len=16, dropout=0
    )
    torch.manual_seed(0)
    return CustomTransformerAdapter.new(shape, tokenizer)


def sample(adapter, seed, **options):
    prompt = adapter.tokenizer.encode("abc")
    out = adapter.generate(prompt, 10, options.pop("temperature", 1.0), torch.Generator().manual_seed(seed), **options)
    return out[len(prompt) :].tolist()


@pytest.mark.parametrize("kind", ["hf", "custom"])
def test_same_seed_same_tokens_and_top_k_1_is_greedy(request, kind):
    adapter = request.getfixturevalue(kind)
    assert sample(adapter, 1) == sample(adapter, 1)
    assert len({tuple(sample(adapter, seed)) for seed in range(4)}) > 1  # the seed matters
    greedy = sample(adapter, 0, temperature=0.0)
    assert sample(adapter, 1, top_k=1) == greedy[: len(sample(adapter, 1, top_k=1))]
    assert sample(adapter, 2, top_p=1e-6) == greedy[: len(sample(adapter, 2, top_p=1e-6))]


@pytest.mark.parametrize("kind", ["hf", "custom"])
def test_each_new_token_is_handed_over_as_it_comes(request, kind):
    adapter = request.getfixturevalue(kind)
    seen = []
    new = sample(adapter, 3, on_token=seen.append)
    assert seen == new and seen


def test_hf_generation_stops_at_eos_and_knows_its_stop_ids(hf):
    eos = hf.tokenizer.eos_id
    assert hf.stop_ids == {eos}
    # A model whose logits always favour EOS ends after one token.
    bias = torch.zeros(hf.tokenizer.vocab_size)
    bias[eos] = 100.0
    head = hf.model.get_output_embeddings()
    original = head.bias
    head.bias = torch.nn.Parameter(bias)
    try:
        assert sample(hf, 0) == [eos]
    finally:
        head.bias = original


def test_logits_are_those_the_loss_uses(hf, custom):
    for adapter in (hf, custom):
        ids = torch.randint(0, adapter.tokenizer.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
        inputs, targets = ids[:, :-1], ids[:, 1:]
        logits = adapter.logits(inputs)
        expected = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        adapter.model.eval()
        torch.testing.assert_close(adapter.loss(inputs, targets), expected)
