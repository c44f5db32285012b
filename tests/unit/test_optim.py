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
