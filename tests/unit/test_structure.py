"""The public surface and the import direction (api → common ← worker) hold."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", ["api", "worker", "common"])
def test_exported_members(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        assert not name.startswith("_")
        assert hasattr(module, name), f"{package}.{name} missing"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("api", {"worker"}), ("worker", {"api"}), ("common", {"api", "worker"})],
)
def test_imports_run_one_way(package: str, forbidden: set[str]) -> None:
    for path in (ROOT / package).rglob("*.py"):
        if path.name == "cli.py" and package == "common":
            continue  # the CLI entry module is the one place that wires both sides
        assert not imports_of(path) & forbidden, f"{path} imports {imports_of(path) & forbidden}"


def test_simulator_imports_nothing_of_corral() -> None:
    modules = list((ROOT / "common" / "simulator").glob("*.py"))
    assert len(modules) >= 4
    for path in modules:
        assert not imports_of(path) & {"api", "worker", "common"}, path
        assert "from .." not in path.read_text(), path  # only its own modules


def test_openai_simulator_imports_only_the_simulator() -> None:
    path = ROOT / "common" / "simulator_openai.py"
    assert not imports_of(path) & {"api", "worker", "common"}
    relative = [line for line in path.read_text().splitlines() if line.startswith("from .")]
    assert relative and all(line.startswith("from .simulator") for line in relative)


def test_every_setting_is_documented() -> None:
    from common.settings import Settings

    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"CORRAL_{name.upper()}" not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
