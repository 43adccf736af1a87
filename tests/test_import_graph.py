"""No import circles inside a package: the modules of model/, daemon/, client/, gui/ and integrations/
are parsed (ast, every import statement, the ones inside functions too, since a function-level import
only hides a circle) and each package's graph of imports between its own modules must be acyclic."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "daemon", "client", "gui", "integrations")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_pkg: bool, level: int, target: str | None) -> str:
    """The absolute (root-relative) name a relative import refers to."""
    if not level:
        name = target or ""
        return name.removeprefix("unimoe_audio.") if name.startswith("unimoe_audio.") else ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (a package's ``__init__`` counts as a module;
    ``from . import x`` is an import of ``x`` when ``x`` is a module)."""
    files = sorted((ROOT / package).rglob("*.py"))
    names = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [_resolve(name, is_pkg, 0, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_pkg, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            else:
                continue
            for t in targets:
                # the longest known module the name starts with (``a.b.c`` where ``a.b`` is the module)
                while t and t not in names:
                    t = t.rpartition(".")[0]
                if t and t != name and t.split(".")[0] == package:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def _is_parent_import(a: str, b: str) -> bool:
    """A package's ``__init__`` importing its own submodules, and those modules naming the package, is how
    Python packages are built (``client/tasks/__init__`` registers its tasks), not a circle between rooms."""
    return b.startswith(a + ".") or a.startswith(b + ".")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_within_a_package(package: str) -> None:
    graph = {n: {m for m in deps if not _is_parent_import(n, m)} for n, deps in import_graph(package).items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle in {package}/: {' -> '.join(cycle or [])}"


def test_the_checker_sees_function_level_circles() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert find_cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}) is None
    # edges from function bodies count: the engine imports the loader, and music the continuation planner
    # (two levels up, ``from ..continuation``), only inside functions
    model = import_graph("model")
    assert "model.checkpoint" in model["model.engine"]
    assert "model.continuation" in model["model.tasks.music"]
    assert {"model.tasks.base", "model.length"} <= model["model.tasks.speech"]
    # ``from . import x`` names the module x, not the package
    assert "daemon.outputs" in import_graph("daemon")["daemon.worker"]
