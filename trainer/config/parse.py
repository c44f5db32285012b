"""Config layers from a YAML file and from ``key=value`` overrides, with positions for errors.

Values are read with OmegaConf's YAML loader (which, unlike plain PyYAML, reads ``3e-4`` as
a float); line numbers come from composing the same text with PyYAML, so an unknown key or
a wrong type is reported as ``file, line N``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from trainer.config.compose import ConfigLayer
from trainer.config.schema import MAPPING_FIELDS
from trainer.errors import ConfigError, UsageError


def yaml_layer(path: str) -> ConfigLayer:
    file = Path(path)
    if not file.is_file():
        reason = "is a directory" if file.is_dir() else "not found"
        raise ConfigError(
            f"config file {reason}", source=path, hint="check the path given to --config (examples are in configs/)"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file cannot be read as UTF-8 text ({err})", source=path) from err
    try:
        loaded = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"invalid YAML: {problem}", source=f"{path}{where}", hint="fix the syntax; every line must be 'key: value'"
        ) from err
    except Exception as err:  # OmegaConf's own complaints, e.g. duplicate keys
        raise ConfigError(f"invalid config: {str(err).splitlines()[0]}", source=path) from err
    if not OmegaConf.is_dict(loaded):
        raise ConfigError("the file must be a mapping of keys to values (key: value lines)", source=path)
    values = OmegaConf.to_container(loaded, resolve=False)
    return ConfigLayer(path, values, _key_lines(node))


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def overrides_layer(overrides: list[str], source: str = "command line") -> ConfigLayer:
    """``key=value`` strings; values are parsed as YAML (``null``, ``3e-4``, ``true``)."""
    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"cannot read override {item!r}: expected key=value, e.g. max_steps=500")
        values[key.strip()] = _parse_value(raw, mapping=key.strip() in MAPPING_FIELDS)
    return ConfigLayer(source, values)


def _parse_value(raw: str, mapping: bool = False) -> object:
    """YAML scalars (null, true, 42); anything else stays text and the schema converts it
    (a float field reads "3e-4"); text YAML would turn into a mapping (e.g. "ROMEO:") stays
    text, except for a field that holds a mapping (data_columns={prompt: question})."""
    if not raw:
        return ""  # key= sets an empty string (e.g. an empty sampling_prompt)
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if mapping and isinstance(parsed, dict):
        return parsed
    return raw if isinstance(parsed, (dict, list)) else parsed
