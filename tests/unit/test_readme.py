"""README.md documents every TrainingConfig field with its true default, and its links work."""

import dataclasses
import re

import yaml

from tests.conftest import REPO
from trainer.config.schema import TrainingConfig

README = (REPO / "README.md").read_text()
ROW = re.compile(r"^\| `(\w+)` \| `([^`]*)` \| (.+) \| (.+) \|$", re.MULTILINE)


def documented() -> dict[str, tuple[str, str, str]]:
    return {key: (default, value_range, text) for key, default, value_range, text in ROW.findall(README)}


def test_every_field_is_documented_with_its_default():
    rows = documented()
    for field in dataclasses.fields(TrainingConfig):
        assert field.name in rows, f"README's hyperparameter reference lacks {field.name}"
        default, value_range, text = rows[field.name]
        # A default from a factory (a list or a mapping: a dataclass default cannot be mutable).
        true_default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert yaml.safe_load(default) == true_default, (
            f"{field.name}: README says {default}, code says {true_default!r}"
        )
        assert value_range.strip() and len(text) > 20, f"{field.name} needs a range and a description"


def test_no_documented_field_is_stale():
    assert set(documented()) <= {f.name for f in dataclasses.fields(TrainingConfig)}


def test_relative_links_point_at_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


def test_readme_names_the_example_configs():
    for name in ("default", "small-model", "large-model", "fast-training", "detailed-eval"):
        assert f"configs/{name}.yaml" in README
    assert "configs/README.md" in README


def test_exit_code_table_is_the_code_table():
    from trainer.errors import ExitCode

    table = README[README.index("| code | meaning |") :].split("\n\n")[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", table, re.MULTILINE)
    assert rows == [(str(int(code)), code.meaning) for code in ExitCode]
