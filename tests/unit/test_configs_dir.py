"""Every YAML in configs/ loads, validates and builds the architecture it claims (conf/: test_hydra_conf.py)."""

from pathlib import Path

import pytest

from tests.conftest import REPO
from trainer.config.compose import compose_config
from trainer.config.parse import yaml_layer
from trainer.models.transformer import Transformer
from trainer.run.build import model_shape

CONFIG_FILES = sorted((REPO / "configs").rglob("*.yaml"))


def test_the_documented_configs_exist():
    names = {p.name for p in CONFIG_FILES}
    assert {
        "default.yaml",
        "small-model.yaml",
        "large-model.yaml",
        "fast-training.yaml",
        "detailed-eval.yaml",
        "custom-transformer.yaml",
    } <= names
    assert (REPO / "configs" / "README.md").is_file()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_config_loads_and_opens_with_its_command(path: Path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "main.py" in first, f"{path.name} must open with the command that uses it"
    config = compose_config([yaml_layer(str(path))])
    assert config.model_name is None or path.stem.startswith("qwen")
    if config.model_name is None:
        model = Transformer(model_shape(config, vocab_size=100))
        assert len(model.blocks) == config.n_layers
        assert model.token_embedding.embedding_dim == config.d_model
        assert model.blocks[0].attn.n_heads == config.n_heads
        assert model.blocks[0].mlp.up.out_features == config.d_ff
        assert model.position_embedding.num_embeddings == config.max_seq_len
        assert model.blocks[0].attn.dropout == config.dropout


def test_default_yaml_is_exactly_the_defaults_and_names_every_field():
    from trainer.config.schema import FIELD_NAMES, TrainingConfig

    layer = yaml_layer(str(REPO / "configs" / "default.yaml"))
    assert compose_config([layer]) == TrainingConfig()
    assert sorted(layer.values) == sorted(FIELD_NAMES)


def test_examples_differ_as_they_claim():
    load = lambda name: compose_config([yaml_layer(str(REPO / "configs" / name))])  # noqa: E731
    small, default, large = load("small-model.yaml"), load("default.yaml"), load("large-model.yaml")
    size = lambda c: Transformer(model_shape(c, 100)).num_parameters()  # noqa: E731
    assert size(small) < size(default) < size(large)
    fast, detailed = load("fast-training.yaml"), load("detailed-eval.yaml")
    assert fast.max_steps < default.max_steps
    assert detailed.eval_cadence and detailed.sampling_cadence and not default.eval_cadence
