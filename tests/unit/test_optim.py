import pytest
import torch

from trainer.config.schema import TrainingConfig
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.transformer import TransformerShape
from trainer.training.lr_schedule import lr_at
from trainer.training.optimizer import create_optimizer


def test_no_decay_on_biases_norms_and_embeddings():
    adapter = CustomTransformerAdapter.new(TransformerShape(11, 2, 16, 2, 32, 8, 0.0), tokenizer=None)
    model = adapter.model
    optimizer = create_optimizer(adapter, TrainingConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(n.endswith("weight") and "norm" not in n and "embedding" not in n for n in decayed)
    assert {"token_embedding.weight", "position_embedding.weight"} <= {names[id(p)] for p in no_decay["params"]}
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len(list(model.parameters()))  # every parameter once, the tied one too


def test_warmup_then_cosine_to_floor():
    cfg = TrainingConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)


def test_lr_decay_steps_fixes_the_schedule_length():
    short = TrainingConfig(learning_rate=1.0, warmup_steps=0, max_steps=20, lr_decay_steps=100)
    long = TrainingConfig(learning_rate=1.0, warmup_steps=0, max_steps=40, lr_decay_steps=100)
    assert [lr_at(s, short) for s in range(20)] == [lr_at(s, long) for s in range(20)]


def test_constant_schedule():
    cfg = TrainingConfig(learning_rate=0.5, warmup_steps=0, lr_schedule="constant")
    assert {lr_at(s, cfg) for s in (0, 100, 9999)} == {0.5}


@pytest.mark.parametrize("fused", [True, False])
def test_state_made_before_the_first_step_changes_no_number(fused):
    from trainer.training.optimizer import allocate_state

    def three_steps(prefill: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
        model[1].weight.requires_grad_(False)  # a frozen parameter gets no state
        optimizer = torch.optim.AdamW([p for p in model.parameters()], lr=0.1, fused=fused)
        if prefill:
            allocate_state(optimizer)
            assert len(optimizer.state) == 3 * 2 - 1
        for step in range(3):
            model(torch.randn(4, 8, generator=torch.Generator().manual_seed(step))).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return model, optimizer

    (lazy_model, lazy), (eager_model, eager) = three_steps(False), three_steps(True)
    for a, b in zip(lazy_model.parameters(), eager_model.parameters(), strict=True):
        assert torch.equal(a, b)
    lazy_state, eager_state = lazy.state_dict()["state"], eager.state_dict()["state"]
    assert lazy_state.keys() == eager_state.keys()
    for index, state in lazy_state.items():
        for key, value in state.items():
            other = eager_state[index][key]
            assert torch.equal(value, other) and value.dtype == other.dtype and value.device == other.device
