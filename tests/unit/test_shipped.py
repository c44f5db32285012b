"""Where the shipped conf/ and configs/ are found: the package data of an installed wheel
first, the checkout's folders otherwise; --config NAME finds a shipped example."""

from pathlib import Path

import trainer.cli.shipped as shipped
from tests.conftest import REPO


def test_a_checkout_uses_its_own_folders():
    assert shipped.conf_dir() == REPO / "conf" and shipped.configs_dir() == REPO / "configs"


def test_installed_package_data_wins_over_a_stranger_folder_beside_it(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "trainer" / "_conf").mkdir(parents=True)
    (site / "conf").mkdir()  # another package's top-level conf/, beside trainer/
    monkeypatch.setattr(shipped, "_TRAINER_DIR", site / "trainer")
    assert shipped.conf_dir() == site / "trainer" / "_conf"


def test_config_names_resolve_to_the_shipped_examples_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = str(REPO / "configs" / "small-model.yaml")
    for given in ("small-model", "small-model.yaml", "configs/small-model.yaml"):
        assert shipped.find_config_file(given) == example
    (tmp_path / "small-model.yaml").write_text("max_steps: 3\n")
    assert shipped.find_config_file("small-model.yaml") == "small-model.yaml"  # a file here wins
    assert shipped.find_config_file("no-such-example") == "no-such-example"  # reported as not found later
    assert shipped.find_config_file("elsewhere/small-model.yaml") == "elsewhere/small-model.yaml"
    assert Path(example).is_file()
