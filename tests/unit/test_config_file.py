from pathlib import Path

import pytest

from trainer.config.compose import compose_config
from trainer.config.parse import overrides_layer, yaml_layer
from trainer.errors import ConfigError, UsageError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_values_and_scientific_floats(tmp_path):
    layer = yaml_layer(write(tmp_path, "# comment\nlearning_rate: 3e-4\nn_layers: 2\neval_cadence: null\n"))
    config = compose_config([layer])
    assert config.learning_rate == 3e-4 and config.n_layers == 2 and config.eval_cadence is None


def test_unknown_key_reports_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "n_layers: 2\n\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        compose_config([yaml_layer(path)])
    assert f"{path}, line 3" in str(info.value) and "did you mean 'learning_rate'" in str(info.value)


def test_wrong_type_reports_file_line(tmp_path):
    path = write(tmp_path, "n_layers: 2\nbatch_size: sixteen\n")
    with pytest.raises(ConfigError, match=r"line 2: batch_size='sixteen' has the wrong type: expected int"):
        compose_config([yaml_layer(path)])


def test_invalid_yaml_reports_line(tmp_path):
    path = write(tmp_path, "n_layers: 2\nd_model: [256\n")
    with pytest.raises(ConfigError, match=r"invalid YAML.*") as info:
        yaml_layer(path)
    assert "line " in str(info.value)


def test_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        yaml_layer(write(tmp_path, "- a\n- b\n"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        yaml_layer(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="directory"):
        yaml_layer(str(tmp_path))


def test_empty_file_means_defaults(tmp_path):
    assert compose_config([yaml_layer(write(tmp_path, "# nothing\n"))]).max_steps == 10000


def test_overrides_parse_yaml_scalars():
    values = overrides_layer(
        ["max_steps=5", "eval_cadence=null", "sampling_prompt=ROMEO:", "sampling_prompt=", "fast_matmul=false"]
    ).values
    assert values == {"max_steps": 5, "eval_cadence": None, "sampling_prompt": "", "fast_matmul": False}
    assert overrides_layer(["sampling_prompt=ROMEO:"]).values["sampling_prompt"] == "ROMEO:"


@pytest.mark.parametrize("bad", ["max_steps", "=5"])
def test_malformed_override(bad):
    with pytest.raises(UsageError):
        overrides_layer([bad])
