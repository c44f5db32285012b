"""The wheel's contents: every package and every folder of conf/ and configs/ is listed in
pyproject.toml, and the console script points at the CLI layer. (CI builds the wheel, installs
it in a fresh virtual environment and runs it from another directory.)"""

import tomllib

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_python_package_is_listed():
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for package in ("trainer", "registry")
        for init in (REPO / package).rglob("__init__.py")
    }
    assert on_disk <= set(SETUPTOOLS["packages"]), on_disk - set(SETUPTOOLS["packages"])


def test_every_folder_of_conf_and_configs_ships():
    for package, folder in SETUPTOOLS["package-dir"].items():
        folders = {REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir())}
        for path in folders:
            name = ".".join([package, *path.relative_to(REPO / folder).parts])
            assert name in SETUPTOOLS["packages"], f"{path} would be left out of the wheel: add {name}"


def test_console_script_and_no_top_level_main_module():
    assert PYPROJECT["project"]["scripts"] == {"lmrunner": "trainer.cli.main:main"}
    assert "py-modules" not in SETUPTOOLS


def test_the_mlflow_extra_carries_what_its_default_store_needs():
    # mlflow-skinny's default tracking store is sqlite:///mlflow.db, which it cannot open
    # without SQLAlchemy and alembic (UnsupportedModelRegistryStoreURIException).
    names = {
        req.split(">")[0].split("=")[0].strip().lower()
        for req in PYPROJECT["project"]["optional-dependencies"]["mlflow"]
    }
    assert {"mlflow-skinny", "sqlalchemy", "alembic"} <= names
