"""Config layers and how they merge onto the schema: defaults < file < overrides < flags.

Each front door turns what it was given into ``ConfigLayer``s (a YAML file, ``key=value``
overrides, command-line flags, a checkpoint's saved config) and ``compose_config`` merges them
onto ``TrainingConfig``. Names and types are checked key by key, so an error names the key and
the file and line it came from; the rules between values are the schema's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainer.config.schema import FIELD_NAMES, FIELD_TYPES, LIST_FIELDS, MAPPING_FIELDS, TrainingConfig
from trainer.errors import ConfigError, did_you_mean


@dataclass
class ConfigLayer:
    """One source of values, in merge order: a file, the command line, a checkpoint.

    ``lines`` maps keys to their line in a file, so errors can point at it.
    """

    source: str
    values: dict[str, Any]
    lines: dict[str, int] = dataclasses.field(default_factory=dict)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}, line {line}" if line else self.source


def compose_config(layers: list[ConfigLayer]) -> TrainingConfig:
    """Merge layers onto the structured schema (later layers win) and build the dataclass,
    which checks the rules between values."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    merged = merge_layers(layers)
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:  # e.g. a value written as an ${interpolation}
        key = getattr(err, "full_key", None)
        raise ConfigError(
            f"cannot resolve {key or 'a value'}: {str(err).splitlines()[0]}",
            key=key,
            hint="write plain values; ${...} interpolations are not supported here",
        ) from err


def config_from_dict(values: dict[str, Any], source: str = "dict") -> TrainingConfig:
    """A TrainingConfig from a plain dict (``to_dict``'s inverse): missing keys take their
    defaults, unknown keys and wrong types are refused."""
    return compose_config([ConfigLayer(source, values)])


def merge_layers(layers: list[ConfigLayer]):
    """Layers merged onto the structured schema: names and types checked, rules not yet.

    Each key is assigned on its own so that a wrong type is reported with its key and the
    file and line it came from.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    merged = OmegaConf.structured(TrainingConfig)
    for layer in layers:
        for key, value in layer.values.items():
            if key not in FIELD_NAMES:
                raise ConfigError(
                    f"unknown key '{key}'{did_you_mean(str(key), FIELD_NAMES)}",
                    key=str(key),
                    source=layer.where(key),
                    hint="see the hyperparameter reference in README.md for every valid key",
                )
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
            if key in LIST_FIELDS:
                value = _list_from_text(value)
            if (isinstance(value, dict) and key not in MAPPING_FIELDS) or (
                isinstance(value, list) and key not in LIST_FIELDS
            ):
                raise ConfigError(
                    f"{key} must be a single value, not a {type(value).__name__}",
                    key=key,
                    source=layer.where(key),
                )
            try:
                merged[key] = _number_from_text(key, value)
            except (OmegaConfBaseException, ValueError) as err:
                expected = _type_name(TrainingConfig.__dataclass_fields__[key].type)
                example = f"; write a list, e.g. {key}=[{value}]" if key in LIST_FIELDS else ""
                raise ConfigError(
                    f"{key}={value!r} has the wrong type: expected {expected}{example}",
                    key=key,
                    source=layer.where(key),
                ) from err
    return merged


def _list_from_text(value: Any) -> Any:
    """A list field given as text on a command line ("[tensorboard,csv]") becomes the list it
    spells; any other text stays text, for the type check to refuse with an example."""
    if isinstance(value, str) and value.strip().startswith("["):
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, list) else value
    return value


def _number_from_text(key: str, value: Any) -> Any:
    """Text for a numeric field ("3e-4" on a command line) becomes the number it spells, and
    a number for a text field becomes its text; OmegaConf is phasing out doing this
    implicitly. Raises ValueError if the text spells no number."""
    declared = FIELD_TYPES[key]
    if declared in (str, str | None) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        return value
    if declared in (int, int | None):
        return int(value)
    if declared in (float, float | None):
        return float(value)
    return value


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return text.replace(" | None", " or null")
