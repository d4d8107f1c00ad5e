"""The package's layering holds: no import circles, the data plane never reaches into the control
plane, the notebook layer uses only the public API, and private Ray APIs live in one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "serve_nb"

#: What the notebook layer may import from serve_nb: the public surface, pure logic, itself.
PUBLIC = ("serve_nb", "serve_nb.api", "serve_nb.feed", "serve_nb.types", "serve_nb.config",
          "serve_nb.exceptions", "serve_nb.deployment", "serve_nb.handle")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every serve_nb module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("serve_nb"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("serve_nb"):
            found.add(node.module)
            for alias in node.names:  # ``from serve_nb.data import client`` imports a module
                candidate = f"{node.module}.{alias.name}"
                if _path_of(candidate) is not None:
                    found.add(candidate)
    return found


def _path_of(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _deps(module: str) -> set[str]:
    """Direct imports, not counting a package's own ``__init__`` re-exports of its parents."""
    return {d for d in GRAPH.get(module, set()) if d in GRAPH and d != module and not module.startswith(d + ".")}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(_deps(module)):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_module_imports_itself_back_through_others():
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_the_cycle_check_finds_a_planted_circle():
    GRAPH["serve_nb.core.choice"] = GRAPH["serve_nb.core.choice"] | {"serve_nb.core.routing"}
    GRAPH["serve_nb.core.routing"] = GRAPH["serve_nb.core.routing"] | {"serve_nb.core.choice"}
    try:
        assert _cycle() is not None
    finally:
        GRAPH["serve_nb.core.choice"].discard("serve_nb.core.routing")
        GRAPH["serve_nb.core.routing"].discard("serve_nb.core.choice")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("serve_nb.data")))
def test_the_data_plane_never_imports_the_control_plane(module):
    bad = sorted(d for d in GRAPH[module] if d.startswith(("serve_nb.control", "serve_nb.bootstrap", "serve_nb.api")))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("serve_nb.notebook")))
def test_the_notebook_layer_uses_only_the_public_api(module):
    bad = sorted(d for d in GRAPH[module]
                 if d not in PUBLIC and not d.startswith(("serve_nb.notebook", "serve_nb.core")))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("serve_nb.core")))
def test_pure_logic_imports_nothing_but_pure_logic_and_plain_data(module):
    allowed = ("serve_nb.core", "serve_nb.types", "serve_nb.config", "serve_nb.deployment", "serve_nb.exceptions")
    bad = sorted(d for d in GRAPH[module] if not d.startswith(allowed))
    assert not bad, f"{module} imports {bad}"


def test_private_ray_apis_are_used_in_one_module_only():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "ray_private.py":
            continue
        text = path.read_text()
        for marker in ("ray._private", "ray.experimental.internal_kv", "internal_kv", "ray.core.generated"):
            if marker in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {marker}")
    assert not offenders, offenders


def test_no_module_is_longer_than_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
