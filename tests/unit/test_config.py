import dataclasses

import pytest

from trainer.config.compose import ConfigLayer, compose_config, config_from_dict
from trainer.config.schema import FIELD_NAMES, TrainingConfig
from trainer.errors import ConfigError, ConfigValueError

SPEC_DEFAULTS = {
    "n_layers": 4,
    "d_model": 256,
    "n_heads": 4,
    "d_ff": 1024,
    "dropout": 0.1,
    "max_seq_len": 256,
    "seed": None,
    "learning_rate": 3e-4,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "batch_size": 16,
    "max_steps": 10000,
    "train_ratio": 0.95,
    "eval_cadence": None,
    "sampling_cadence": None,
    "sampling_temperature": 1.0,
    "sampling_prompt": "The",
    "sampling_max_length": 100,
    "sampling_seed": 42,
    "checkpoint_cadence": 1000,
    "model_name": None,
    "tokenizer": None,
}


def test_spec_fields_have_spec_defaults():
    config = TrainingConfig()
    for key, default in SPEC_DEFAULTS.items():
        assert getattr(config, key) == default, key


def test_to_dict_from_dict_round_trip():
    config = TrainingConfig(n_layers=6, d_model=384, n_heads=6, model_name="qwen-0.5b-base", seed=3, eval_cadence=50)
    as_dict = config.to_dict()
    assert set(as_dict) == set(FIELD_NAMES)
    assert as_dict["model_name"] == "qwen-0.5b-base"
    assert config_from_dict(as_dict) == config


def test_to_dict_keeps_model_name_none():
    assert TrainingConfig().to_dict()["model_name"] is None


def test_from_dict_missing_fields_take_defaults():
    # An "old" config from before most fields existed.
    config = config_from_dict({"learning_rate": 1e-3, "batch_size": 8})
    assert config.learning_rate == 1e-3 and config.batch_size == 8
    assert config.n_layers == 4 and config.checkpoint_cadence == 1000


def test_from_dict_loads_new_fields():
    config = config_from_dict({"n_layers": 2, "d_ff": 64, "train_ratio": 0.8, "checkpoint_cadence": None})
    assert (config.n_layers, config.d_ff, config.train_ratio, config.checkpoint_cadence) == (2, 64, 0.8, None)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown key 'max_stepz' \(did you mean 'max_steps'\?\)") as info:
        config_from_dict({"max_stepz": 3})
    assert info.value.key == "max_stepz"


@pytest.mark.parametrize(
    "values, key",
    [
        ({"max_steps": "many"}, "max_steps"),
        ({"eval_cadence": 2.5}, "eval_cadence"),
        ({"dropout": "high"}, "dropout"),
        ({"fast_matmul": "maybe"}, "fast_matmul"),
        ({"compile": "maybe"}, "compile"),
        ({"n_layers": [1, 2]}, "n_layers"),
    ],
)
def test_wrong_types_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key) as info:
        config_from_dict(values)
    assert info.value.exit_code == 2


def test_strings_of_numbers_convert():
    assert config_from_dict({"learning_rate": "3e-4", "max_steps": "12"}).max_steps == 12


@pytest.mark.parametrize(
    "values, key, other",
    [
        ({"d_model": 100, "n_heads": 3}, "d_model", "n_heads"),
        ({"batch_size": 10, "grad_accum_steps": 4}, "batch_size", "grad_accum_steps"),
    ],
)
def test_cross_field_rules_name_both_keys_and_values(values, key, other):
    with pytest.raises(ConfigValueError) as info:
        TrainingConfig(**values)
    err = info.value
    assert (err.key, err.other_key) == (key, other)
    assert str(values[key]) in str(err) and str(values[other]) in str(err)


@pytest.mark.parametrize(
    "key, value",
    [
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("train_ratio", 0.0),
        ("train_ratio", 1.0),
        ("n_layers", 0),
        ("batch_size", -1),
        ("max_steps", 0),
        ("learning_rate", 0.0),
        ("eval_cadence", 0),
        ("checkpoint_cadence", -5),
        ("lr_schedule", "linear"),
        ("precision", "fp8"),
        ("device", "tpu"),
        ("seed", -1),
        ("grad_clip", 0.0),
    ],
)
def test_value_rules(key, value):
    with pytest.raises(ConfigValueError) as info:
        TrainingConfig(**{key: value})
    assert info.value.key == key


def test_edges_that_are_allowed():
    TrainingConfig(
        dropout=0.0, train_ratio=0.01, eval_cadence=None, checkpoint_cadence=None, grad_clip=None, device="cuda:1"
    )


def test_later_layers_win_and_errors_name_the_file_line():
    layers = [
        ConfigLayer("a.yaml", {"max_steps": 5, "n_layers": 2}, {"max_steps": 3}),
        ConfigLayer("cli", {"max_steps": 7}),
    ]
    assert compose_config(layers).max_steps == 7
    with pytest.raises(ConfigError, match=r"a\.yaml, line 3: max_steps='x'"):
        compose_config([ConfigLayer("a.yaml", {"max_steps": "x"}, {"max_steps": 3})])


def test_config_hash_ignores_resume_but_not_training_values():
    base = TrainingConfig(seed=1)
    assert base.config_hash() == dataclasses.replace(base, resume="outputs/x").config_hash()
    assert base.config_hash() != dataclasses.replace(base, learning_rate=1e-3).config_hash()


FLOAT_FIELDS = [f.name for f in dataclasses.fields(TrainingConfig) if f.type in ("float", "float | None")]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("key", FLOAT_FIELDS)
def test_non_finite_float_settings_are_refused(key, value):
    # inf slips past rules such as learning_rate > 0, then poisons the weights of the first step.
    with pytest.raises(ConfigValueError, match=f"{key}=.* must be a finite number") as info:
        TrainingConfig(**{key: value})
    assert info.value.key == key and info.value.exit_code == 2


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "1e999"])
def test_non_finite_floats_from_text_are_refused(text):
    with pytest.raises(ConfigValueError, match="learning_rate=.* must be a finite number"):
        compose_config([ConfigLayer("command line", {"learning_rate": text})])
