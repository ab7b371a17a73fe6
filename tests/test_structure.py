"""The package's shape: one public surface, imports that run one way (api → common ← worker, only the CLI wires
the two sides), no import cycles, and the simulator standing alone."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
# each sub-package of `corral` and the repository folder it lives in (pyproject's package-dir)
FOLDERS = {"api": "api", "worker": "worker", "common": "common", "cli": "cli", "client": "client",
           "simulator": "simulator", "": "corral"}  # fmt: skip


def modules() -> dict[str, Path]:
    """Every shipped module by its dotted name."""
    found: dict[str, Path] = {}
    for sub, folder in FOLDERS.items():
        base = ROOT / folder
        paths = base.glob("*.py") if not sub else base.rglob("*.py")
        for path in paths:
            parts = [*path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(["corral", *([sub] if sub else []), *parts])] = path
    return found


MODULES = modules()


def outside_type_checking(tree: ast.Module) -> list[ast.stmt | ast.expr]:
    """The nodes that run: everything but the bodies of ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if id(n) not in skipped]  # type: ignore[misc]


def imports_of(name: str) -> set[str]:
    """The modules ``name`` imports (at module level or inside functions), each as a dotted name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in outside_type_checking(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


def corral_imports(name: str) -> set[str]:
    return {m for m in imports_of(name) if m in MODULES and m != name}


def test_the_tree_is_found() -> None:
    assert {"corral", "corral.api.app", "corral.worker", "corral.common.store", "corral.cli.main"} <= set(
        MODULES
    )


@pytest.mark.parametrize(
    "package", ["corral", "corral.api", "corral.worker", "corral.common", "corral.client", "corral.cli",
                "corral.simulator"]
)  # fmt: skip
def test_exported_members(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert not name.startswith("_")
        assert hasattr(module, name), f"{package}.{name} missing"


def test_the_public_surface() -> None:
    import corral

    for name in (
        "Client",
        "AsyncClient",
        "DirectClient",
        "Job",
        "CorralError",
        "JobRequest",
        "JobView",
        "Settings",
    ):
        assert name in corral.__all__


def test_nothing_imports_the_folders_by_their_own_names() -> None:
    """``api``, ``common``, ``worker``… are names every application has: only ``corral.…`` is imported."""
    bare = {"api", "worker", "common", "cli", "client", "simulator"}
    tests = {f"tests:{p.relative_to(ROOT)}": p for p in (ROOT / "tests").rglob("*.py")}
    bench = {f"bench:{p.relative_to(ROOT)}": p for p in (ROOT / "bench").rglob("*.py")}
    for label, path in {**{k: v for k, v in MODULES.items()}, **tests, **bench}.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & bare, f"{label} imports {names}"


RULES = {
    # sub-package: the corral sub-packages it may import (besides itself)
    "corral.common": set(),
    "corral.simulator": set(),
    "corral.api": {"corral.common"},
    "corral.worker": {"corral.common"},
    "corral.client": {"corral.common"},
    "corral.cli": {"corral.common", "corral.api", "corral.worker", "corral.client", "corral.simulator"},
}


def sub_package(name: str) -> str:
    return ".".join(name.split(".")[:2])


@pytest.mark.parametrize("package", sorted(RULES))
def test_imports_run_one_way(package: str) -> None:
    allowed = RULES[package] | {package}
    for name in (m for m in MODULES if sub_package(m) == package):
        reached = {sub_package(m) for m in corral_imports(name)} - {"corral"}
        assert reached <= allowed, f"{name} imports {reached - allowed}"


def test_only_the_public_root_imports_the_client_from_corral() -> None:
    """``corral/__init__`` re-exports the client; nothing inside the packages imports ``corral`` itself."""
    for name in MODULES:
        if sub_package(name) != "corral" and name != "corral.__main__":
            assert "corral" not in corral_imports(name), name


def test_no_import_cycles() -> None:
    """Depth-first over every import (lazy ones inside functions too): no module reaches itself again."""
    graph = {name: sorted(corral_imports(name)) for name in MODULES}
    done: set[str] = set()

    def cycle_from(node: str, trail: list[str]) -> list[str]:
        for nxt in graph[node]:
            if nxt in trail:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in done and (found := cycle_from(nxt, [*trail, nxt])):
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        assert not (cycle := cycle_from(start, [start])), " -> ".join(cycle)


def test_the_simulator_imports_only_itself() -> None:
    for name in (m for m in MODULES if sub_package(m) == "corral.simulator"):
        assert all(m.startswith("corral.simulator") for m in corral_imports(name)), name
        external = {m.split(".")[0] for m in imports_of(name) if not m.startswith("corral")}
        assert "corral" not in external


def test_every_setting_is_documented() -> None:
    from corral.common.settings import Settings

    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"CORRAL_{name.upper()}" not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_modules_and_functions_stay_small() -> None:
    """No shipped module over 400 lines, no function over 60: a part that grows past that is two parts."""
    too_long: list[str] = []
    for name, path in MODULES.items():
        source = path.read_text()
        if (lines := len(source.splitlines())) > 400:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, too_long
