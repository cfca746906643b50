"""No import cycles in mtlkit, not even ones hidden inside functions, and no core module
importing the public facade ``mtlkit`` (which imports every layer)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

CORE = ROOT / "core"


def module_name(path: Path, top: Path = CORE, package: str = "mtlkit") -> str:
    parts = list(path.relative_to(top).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def runtime_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports when it runs: module-level and
    function-level imports, relative ones resolved, ``if TYPE_CHECKING:`` blocks left out
    (they never run). ``from package import module`` counts as importing the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def import_graph(top: Path = CORE, package: str = "mtlkit") -> dict[str, set[str]]:
    paths = {
        module_name(p, top, package): p for p in top.rglob("*.py") if "__pycache__" not in p.parts
    }
    known = set(paths)
    graph = {name: runtime_imports(path, name, known) for name, path in paths.items()}
    # `from mtlkit.x import y` where y is no module adds an edge to mtlkit.x itself; drop
    # the edges that only name a module's own parent package (Python's own import order).
    return {
        name: {m for m in edges if not name.startswith(m + ".")} for name, edges in graph.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_mtlkit_has_no_import_cycles():
    graph = import_graph()
    assert "mtlkit.engine" in graph and graph["mtlkit.engine"]  # the scan sees imports
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_core_modules_never_import_the_public_facade():
    graph = import_graph()
    offenders = sorted(name for name, edges in graph.items() if "mtlkit" in edges)
    assert not offenders, f"import from a module, not from `mtlkit`: {offenders}"


def test_the_checker_finds_cycles_hidden_in_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def late():\n    from ..c import thing\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(pkg, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert graph["pkg.d"] == set()  # type-checking imports never run
