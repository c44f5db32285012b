"""Where the files that ship with lmrunner are: conf/ (the Hydra groups) and configs/ (examples).

In a source checkout (and an editable install) they are the top-level conf/ and configs/
folders beside trainer/. A wheel carries the same files as package data, trainer/_conf and
trainer/_configs (pyproject.toml maps them), so an installed ``lmrunner`` finds them from any
directory.
"""

from __future__ import annotations

import re
from pathlib import Path

# The Hydra config groups (folders of conf/ whose options are chosen as GROUP=OPTION).
GROUPS = ("model", "training", "finetune", "data")
_TRAINER_DIR = Path(__file__).resolve().parent.parent


def _shipped(name: str) -> Path:
    # The package data first: installed, trainer/'s parent is site-packages, where a folder
    # named conf/ or configs/ may belong to another package. A checkout has no trainer/_conf.
    packaged = _TRAINER_DIR / f"_{name}"
    return packaged if packaged.is_dir() else _TRAINER_DIR.parent / name


def conf_dir() -> Path:
    return _shipped("conf")


def configs_dir() -> Path:
    return _shipped("configs")


def example_configs() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def find_config_file(given: str) -> str:
    """The file ``--config`` names: the path as given when it exists; otherwise, when it names
    a shipped example (``small-model``, ``small-model.yaml`` or ``configs/small-model.yaml``),
    that example, so the README's commands work from any directory. Anything else is returned
    unchanged, for the config reader to report as not found."""
    if Path(given).exists():
        return given
    name = Path(given).name
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    plain_name = Path(given).parent in (Path("."), Path("configs"))
    shipped = configs_dir() / f"{stem}.yaml"
    return str(shipped) if plain_name and shipped.is_file() else given


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


# An example's first line names the group choice it mirrors: "(the same as: python main.py training=fast)".
_MIRRORS = re.compile(r"\(the same as: python main\.py (\w+=[\w-]+(?: \w+=[\w-]+)*)\)")


def _mirrors() -> dict[str, str]:
    """example config name -> the group choice with the same settings (tests keep them equal)."""
    found = {}
    for path in sorted(configs_dir().glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            match = _MIRRORS.search(handle.readline())
        if match:
            found[path.stem] = match.group(1)
    return found


def mirror_config(group_choice: str) -> str | None:
    """The example config with the settings of ``group_choice`` (training=fast -> fast-training)."""
    return next((name for name, choice in _mirrors().items() if choice == group_choice), None)


def group_of_config(config: str) -> str | None:
    """The group choice an example config mirrors (fast-training or its path -> training=fast)."""
    name = Path(config).name
    return _mirrors().get(name[: -len(".yaml")] if name.endswith(".yaml") else name)
