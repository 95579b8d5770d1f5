"""The import graph of actors/, messages/ and protocol/: no cycles, and a runtime that imports
no app.

The graph is read from the source with ``ast`` (every import, at module level or inside a
function, since either runs), so the test needs no import to succeed first. A module imported
as ``from pkg import name`` counts as an edge to ``pkg.name`` when that is a module, else to
``pkg``; the implicit import of a parent package's ``__init__`` is not an edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator

from tests.support.processes import ROOT, within

PACKAGES = ("actors", "messages", "protocol")


# What the runtime package may never pull in: the applications built on it.
APP_PREFIXES = ("actors.worker", "actors.rendezvous", "protocol", "demo", "tests")


def module_files() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = str(path)
    return found


def imported(tree: ast.AST, known: dict[str, str]) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                whole = f"{node.module}.{alias.name}"
                if whole in known:
                    yield whole
                elif node.module in known:
                    yield node.module


def import_graph() -> dict[str, set[str]]:
    known = module_files()
    graph = {}
    for name, path in known.items():
        with open(path) as source:
            graph[name] = set(imported(ast.parse(source.read(), path), known)) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_but_the_known_runtime_one() -> None:
    found = cycles(import_graph())
    assert found == set(), [sorted(c) for c in found]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}


def test_the_runtime_imports_no_app() -> None:
    static = {dep for name, deps in import_graph().items()
              if name == "actors" or (name.startswith("actors.")
                                      and not name.startswith(APP_PREFIXES))
              for dep in deps}
    assert not {dep for dep in static if dep.startswith(APP_PREFIXES)}
    out = subprocess.run(
        [sys.executable, "-c", "import sys, actors; print('\\n'.join(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, timeout=within(30), check=True)
    assert [m for m in out.stdout.split() if m.startswith(APP_PREFIXES)] == []
