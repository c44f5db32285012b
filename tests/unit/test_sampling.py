"""The custom Transformer's generation: the KV cache changes nothing but speed; top-k and top-p."""

import pytest
import torch

from trainer.models.sampling import SamplingSettings, pick_next_token
from trainer.models.transformer import KVCache, Transformer, TransformerShape

SHAPE = TransformerShape(vocab_size=13, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_seq_len=24, dropout=0.1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return Transformer(SHAPE).eval()


def generate(model, prompt, new_tokens, seed, use_cache, **settings):
    return model.generate(
        torch.tensor(prompt), new_tokens, settings.pop("temperature", 1.0), torch.Generator().manual_seed(seed),
        use_cache=use_cache, **settings,
    )  # fmt: skip


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=1.0), dict(temperature=0.0), dict(temperature=0.7, top_k=4), dict(temperature=1.3, top_p=0.8)],
)
def test_the_cache_gives_the_tokens_of_the_uncached_path(model, settings):
    for seed in range(6):
        # 3 + 30 tokens: past max_seq_len (24), where the window slides and the cache is left behind
        cached = generate(model, [1, 2, 3], 30, seed, True, **settings)
        uncached = generate(model, [1, 2, 3], 30, seed, False, **settings)
        assert torch.equal(cached, uncached), (seed, settings)


def test_cached_logits_match_a_full_forward(model):
    tokens = torch.randint(0, 13, (1, 20), generator=torch.Generator().manual_seed(0))
    full, _ = model(tokens)
    cache = KVCache(SHAPE.max_seq_len)
    prefill, _ = model(tokens[:, :7], cache=cache)  # a prompt, then one token at a time
    steps = [model(tokens[:, i : i + 1], cache=cache)[0] for i in range(7, 20)]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 20


def test_a_cache_cannot_hold_more_than_the_positions(model):
    cache = KVCache(SHAPE.max_seq_len)
    model(torch.zeros(1, 24, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_training_forward_takes_no_cache_and_is_unchanged(model):
    """The training path (dropout on, no cache) is the one it was: the same result for the same seed."""
    model.train()
    x = torch.randint(0, 13, (2, 24), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    a = model(x, x)[1]
    torch.manual_seed(5)
    b = model(x, x)[1]
    model.eval()
    assert torch.equal(a, b)


def test_generation_streams_each_token_as_it_is_drawn(model):
    seen = []
    out = model.generate(torch.tensor([1, 2]), 6, 1.0, torch.Generator().manual_seed(0), on_token=seen.append)
    assert seen == out[2:].tolist()


def test_generation_stops_at_a_stop_token(model):
    greedy = generate(model, [1, 2], 10, 0, True, temperature=0.0).tolist()
    stop = greedy[4]
    stopped = model.generate(torch.tensor([1, 2]), 10, 0.0, torch.Generator(), stop_ids={stop}).tolist()
    assert stopped == greedy[: greedy.index(stop, 2) + 1]  # the stop token is the last one returned


def draws(logits, settings, n=400):
    generator = torch.Generator().manual_seed(0)
    return {int(pick_next_token(logits, settings, generator)) for _ in range(n)}


LOGITS = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5]])  # probabilities ~.37 .22 .14 .08 .05 .03 ... of 6


def test_top_k_draws_only_the_k_most_likely():
    assert draws(LOGITS, SamplingSettings(temperature=1.0, top_k=2)) == {0, 1}
    assert draws(LOGITS, SamplingSettings(temperature=1.0, top_k=1)) == {0}
    assert draws(LOGITS, SamplingSettings(temperature=1.0)) == set(range(6))


def test_top_p_keeps_the_smallest_set_holding_p_of_the_probability():
    probabilities = LOGITS.softmax(-1)[0]
    assert probabilities[:2].sum() < 0.7 < probabilities[:3].sum()  # so 0.7 needs the first three
    assert draws(LOGITS, SamplingSettings(temperature=1.0, top_p=0.7)) == {0, 1, 2}
    assert draws(LOGITS, SamplingSettings(temperature=1.0, top_p=0.01)) == {0}  # the most likely always stays


def test_temperature_zero_is_greedy():
    assert draws(LOGITS, SamplingSettings(temperature=0.0, top_k=3), n=5) == {0}
