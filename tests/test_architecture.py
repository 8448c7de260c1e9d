"""The floors of verifier/ hold (docs/architecture.md): read from the code's own imports, every
`import` counted (inside functions and under TYPE_CHECKING too, since a lazy import is still a
dependency), no two files and no two packages import each other in a circle, no import points
up a floor, and no module grows past 900 lines.

The imports are read with `ast`, never by importing the code, so a circle that Python happens
to tolerate (a lazy import) is still found.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "verifier"
MAX_LINES = 900

# docs/architecture.md draws these: a package may import its own floor's packages (without a
# circle) and any floor below, never one above.
FLOORS: dict[str, int] = {
    "errors": 0, "formats": 0,
    "diff": 1,
    "neighbours": 2,
    "judgement": 3,
    "steps": 4,
    "interop": 5,
    "reports": 6,
    "cli": 7, "__main__": 7, "": 7,  # the CLI, `python -m verifier`, the package itself
}


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every name an import in the file reaches, absolute, with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            yield origin, node.lineno
            for alias in node.names:  # `from verifier.formats import readers` is a module
                yield f"{origin}.{alias.name}", node.lineno


def _graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: first line}; only modules of the package count."""
    modules = _modules(root)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in _imported(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def _package(module: str) -> str:
    """The package a module belongs to (`formats` for verifier.formats.signing), '' for the
    package's own __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                member, component = None, []
                while member != node:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return _graph(PACKAGE)


def _file_circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    return _circles({module: set(edges) for module, edges in graph.items()})


def _package_edges(graph: dict[str, dict[str, int]]) -> dict[tuple[str, str], str]:
    """(package, package it imports) -> one import that makes it, as `module:line -> module`."""
    edges: dict[tuple[str, str], str] = {}
    for module, imports in sorted(graph.items()):
        for target, line in sorted(imports.items()):
            pair = (_package(module), _package(target))
            if pair[0] != pair[1]:
                edges.setdefault(pair, f"{module}:{line} -> {target}")
    return edges


def test_the_reader_finds_the_imports_it_must_count(tmp_path: Path) -> None:
    """The checks below are only as good as the reader: a lazy import, one under
    TYPE_CHECKING, a relative one and a `from package import module` all count."""
    root = tmp_path / "verifier"
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir()
    for init in (root, root / "low", root / "high"):
        (init / "__init__.py").write_text("")
    (root / "low" / "a.py").write_text("def f():\n    from verifier.high import b\n")
    (root / "low" / "c.py").write_text("from typing import TYPE_CHECKING\n"
                                       "if TYPE_CHECKING:\n    from ..high.d import X\n")
    (root / "high" / "b.py").write_text("from verifier.low import a\n")
    (root / "high" / "d.py").write_text("from . import b\n")
    found = _graph(root)
    assert set(found["verifier.low.a"]) == {"verifier.high", "verifier.high.b"}
    assert set(found["verifier.low.c"]) == {"verifier.high.d"}
    assert set(found["verifier.high.d"]) == {"verifier.high.b"}
    assert _file_circles(found) == [["verifier.high.b", "verifier.low.a"]]


def test_no_two_files_import_each_other_in_a_circle(graph: dict[str, dict[str, int]]) -> None:
    circles = _file_circles(graph)
    assert not circles, "files importing each other in a circle:\n" + "\n".join(
        " <-> ".join(circle) for circle in circles)


def test_no_two_packages_import_each_other_in_a_circle(graph: dict[str, dict[str, int]]) -> None:
    edges = _package_edges(graph)
    packages: dict[str, set[str]] = {}
    for source, target in edges:
        packages.setdefault(source, set()).add(target)
    circles = _circles(packages)
    why = [edge for (source, target), edge in edges.items()
           for circle in circles if source in circle and target in circle]
    assert not circles, f"packages in a circle: {circles}; through:\n" + "\n".join(why)


def test_every_import_points_down_a_floor(graph: dict[str, dict[str, int]]) -> None:
    packages = {_package(module) for module in graph}
    assert packages <= set(FLOORS), (
        f"packages on no floor (add them to docs/architecture.md and FLOORS): "
        f"{sorted(packages - set(FLOORS))}")
    upward = [edge for (source, target), edge in _package_edges(graph).items()
              if FLOORS[target] > FLOORS[source]]
    assert not upward, "imports pointing up a floor:\n" + "\n".join(upward)


def test_no_module_is_past_900_lines() -> None:
    long = {str(path.relative_to(PACKAGE.parent)): lines
            for path in PACKAGE.rglob("*.py")
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules past {MAX_LINES} lines: {long}"
