import torch

from trainer.models.transformer import Transformer, TransformerShape

SHAPE = TransformerShape(vocab_size=11, n_layers=2, d_model=16, n_heads=2, d_ff=32, max_seq_len=8, dropout=0.0)


def test_shapes_and_loss():
    torch.manual_seed(0)
    model = Transformer(SHAPE)
    x = torch.randint(0, 11, (3, 8))
    logits, loss = model(x, x)
    assert logits.shape == (3, 8, 11)
    assert abs(loss.item() - torch.log(torch.tensor(11.0)).item()) < 0.5  # near uniform at init


def test_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = Transformer(SHAPE).eval()
    x = torch.randint(0, 11, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 11
    assert torch.allclose(model(x)[0][0, :5], model(y)[0][0, :5], atol=1e-6)


def test_weights_are_tied_and_counted_once():
    model = Transformer(SHAPE)
    assert model.lm_head.weight is model.token_embedding.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())


def test_generate_is_reproducible_and_bounded_by_context():
    torch.manual_seed(0)
    model = Transformer(SHAPE).eval()
    prompt = torch.tensor([1, 2, 3])
    a = model.generate(prompt, 20, 1.0, torch.Generator().manual_seed(4))
    b = model.generate(prompt, 20, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and len(a) == 23  # longer than max_seq_len: the context slides
    greedy = model.generate(prompt, 5, 0.0, torch.Generator())
    assert torch.equal(greedy, model.generate(prompt, 5, 0.0, torch.Generator().manual_seed(9)))


def test_generate_leaves_global_rng_alone():
    model = Transformer(SHAPE).eval()
    state = torch.get_rng_state()
    model.generate(torch.tensor([1]), 5, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())
