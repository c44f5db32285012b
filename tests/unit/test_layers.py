"""The layering stays: imports only go down the layers, and no modules import each other in a circle.

Every ``import`` and ``from ... import`` in trainer/ and registry/ counts for the layering,
including those inside functions (a lazy import is still a dependency) and under TYPE_CHECKING.
Imports under TYPE_CHECKING (annotations only, never executed) do not make a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# Top to bottom: a module may import its own layer and the layers below it, never above.
LAYERS = (
    ("trainer.cli",),
    ("trainer.run",),
    ("trainer.training",),
    ("trainer.models",),
    ("trainer.data",),
    ("trainer.checkpoint",),
    ("trainer.config",),
    ("registry",),  # the model registry: no training code, only the bottom layer below it
    ("trainer.errors", "trainer.files", "trainer.extras"),
)
PACKAGES = ("trainer", "registry")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under the project packages in ``root``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str], typing_too: bool = True) -> list[tuple[int, str]]:
    """(line, module) for every project module that ``path`` imports (``typing_too``: also
    those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            typing_only |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only and not typing_too:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from trainer.training import distributed` imports the submodule itself
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            named = [m for m in submodules if m in known]
            found += [(node.lineno, m) for m in named] or [(node.lineno, node.module)]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def layering_problems(root: Path) -> list[str]:
    files = module_files(root)
    problems = []
    for module, path in files.items():
        own = layer_of(module)
        if own is None:
            if module not in PACKAGES:  # the package roots hold nothing
                problems.append(f"{module} belongs to no layer; add it to LAYERS in this test")
            continue
        for line, imported in imports_of(path, set(files)):
            target = layer_of(imported)
            if target is not None and target < own:
                problems.append(
                    f"{path.relative_to(root)}:{line}: {module} imports {imported}, a layer above it "
                    f"({LAYERS[own][0]} may import only {', '.join(p for ps in LAYERS[own:] for p in ps)})"
                )
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    files = module_files(root)
    graph = {
        module: sorted({i for _, i in imports_of(path, set(files), typing_too=False) if i in files and i != module})
        for module, path in files.items()
    }
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_imports_only_go_down_the_layers():
    assert layering_problems(REPO) == []


def test_no_import_cycles():
    assert import_cycles(REPO) == []


def test_main_py_is_a_shim_over_the_cli_layer():
    tree = ast.parse((REPO / "main.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"trainer.cli.main"}
    assert len((REPO / "main.py").read_text().splitlines()) < 15


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    for name in ("trainer/__init__.py", "trainer/errors.py", "trainer/run/__init__.py", "registry/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "trainer/run/plan.py").write_text("from trainer.errors import ConfigError\n")
    (tmp_path / "registry/store.py").write_text("import os\nfrom trainer.errors import RegistryError\n")
    return tmp_path


def test_the_checks_catch_an_upward_import_and_a_cycle(tiny_project):
    assert layering_problems(tiny_project) == [] and import_cycles(tiny_project) == []
    # The registry reaching up into the run layer, lazily, inside a function:
    (tiny_project / "registry/store.py").write_text("def f():\n    from trainer.run import plan\n")
    (problem,) = layering_problems(tiny_project)
    assert "registry/store.py:2: registry.store imports trainer.run.plan, a layer above it" in problem
    (tiny_project / "trainer/errors.py").write_text("from trainer.run.plan import x\n")
    assert [set(cycle) for cycle in import_cycles(tiny_project)] == [{"trainer.errors", "trainer.run.plan"}]
    (tiny_project / "trainer/util.py").write_text("")
    assert "trainer.util belongs to no layer; add it to LAYERS in this test" in layering_problems(tiny_project)
