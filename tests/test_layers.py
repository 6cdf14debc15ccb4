"""The package's imports go one way: no cycle, no reach up a layer, no other module's private names.

Read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` of a ``pytest_agentmem`` module, at module level or inside
a function, except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest_agentmem

ROOT = Path(pytest_agentmem.__file__).parent
PACKAGE = ROOT.name
#: The folders from the bottom up; a module may import from its own layer and those below.
LAYERS = {"services": 0, "evidence": 0, "memory": 1, "datasets": 1, "load": 2, "cluster": 2, "gate": 3,
          "compare": 4, "report": 5, "history": 5, "adapters": 2, "scenarios": 6}
#: Top-level modules that sit above every folder (the entry point, the public API, the
#: generator of the docs' reference).
TOP = {"plugin", "__init__", "reference"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        yield child
        yield from _walk(child)


def _imports(name: str) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of module ``name``."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub, "", node.lineno) if sub in MODULES else (target, alias.name, node.lineno)


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name) if target in MODULES and target != name}
            for name in MODULES}


def _layer(name: str) -> int | None:
    """The layer of module ``name``; None for the top (it may import anything)."""
    path = MODULES[name]
    if path.parent == ROOT:  # a top-level module: below every folder unless it is the top
        return None if path.stem in TOP else -1
    return LAYERS.get(path.relative_to(ROOT).parts[0])


def test_every_folder_has_a_layer() -> None:
    folders = {p.parent.name for p in ROOT.rglob("*.py") if p.parent != ROOT}
    assert folders <= set(LAYERS), f"give {sorted(folders - set(LAYERS))} a place in LAYERS"


def test_no_import_cycle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert cycles == []


def test_no_import_reaches_up_a_layer() -> None:
    upward = []
    for name in MODULES:
        mine = _layer(name)
        if mine is None:
            continue
        for target, _, line in _imports(name):
            theirs = _layer(target) if target in MODULES else None
            if theirs is None or theirs > mine:
                upward.append(f"{MODULES[name].relative_to(ROOT.parent)}:{line} imports {target}")
    assert upward == []


def test_no_module_imports_another_modules_private_names() -> None:
    private = []
    for name in MODULES:
        aliases: dict[str, str] = {}
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        for target, imported, line in _imports(name):
            if imported.startswith("_") and not imported.startswith("__"):
                private.append(f"{name}:{line} imports {target}.{imported}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and any(m.endswith("." + aliases[node.value.id]) for m in MODULES)):
                private.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert private == []


def test_the_checks_see_what_they_look_for() -> None:
    """The graph is real: known edges are found (a parser that found nothing would pass all)."""
    graph = _graph()
    assert f"{PACKAGE}.load.runner" in graph[f"{PACKAGE}.load.workers"]
    assert f"{PACKAGE}.gate.plugin" in graph[f"{PACKAGE}.report.plugin"]
    assert f"{PACKAGE}.config" in graph[f"{PACKAGE}.session"]
