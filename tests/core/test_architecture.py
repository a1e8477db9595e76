"""The architecture the docs describe (docs/architecture.rst), checked on the source by AST.

* Only ``trionet/_threads.py`` crosses threads: no other module imports :mod:`threading` or
  uses ``to_thread``, ``from_thread`` or ``run_sync_soon``.
* No import cycles inside a package at import time. Counted: the ``import`` and ``from ...
  import`` statements a module runs when it is imported (at module level, also inside a
  module-level ``try``/``if``/``with``), except those under ``if TYPE_CHECKING:``. Imports inside
  functions and methods run later and do not count. An edge goes from a module to the module of
  the same package that it names (``from ._socket import X``, ``from . import _kafka_python``);
  ``from . import name`` where ``name`` is not a submodule points at the package's
  ``__init__``. Each package (``trionet`` itself included) is checked on its direct modules.
* No class is longer than 600 lines.

Each check is a function over a source tree, tried on small trees built here so that a check
that finds nothing proves the tree is clean rather than that the check is blind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2] / "trionet"
THREAD_BRIDGE = "_threads.py"
THREAD_NAMES = frozenset({"to_thread", "from_thread", "run_sync_soon"})
MAX_CLASS_LINES = 600


def _modules(root: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# -- threads -------------------------------------------------------------------------------------


def thread_crossings(root: Path) -> list[str]:
    """``path:line: what`` for every thread crossing outside ``<root>/_threads.py``."""
    found = []
    for path, tree in _modules(root):
        if path == root / THREAD_BRIDGE:
            continue
        where = path.relative_to(root.parent)
        for node in ast.walk(tree):
            what = None
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                if any(n == "threading" or n.split(".")[-1] in THREAD_NAMES for n in names):
                    what = f"import {', '.join(names)}"
            elif isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
                if node.module == "threading" or THREAD_NAMES & set(names) or (
                        node.module or "").split(".")[-1] in THREAD_NAMES:
                    what = f"from {node.module} import {', '.join(names)}"
            elif isinstance(node, ast.Attribute) and node.attr in THREAD_NAMES:
                what = f".{node.attr}"
            elif isinstance(node, ast.Name) and node.id in THREAD_NAMES:
                what = node.id
            if what is not None:
                found.append(f"{where}:{node.lineno}: {what}")
    return found


# -- import cycles -------------------------------------------------------------------------------


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                yield from _import_time_statements(node.orelse)
                continue
            yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(handler.body for handler in node.handlers)):
                yield from _import_time_statements(block)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield from _import_time_statements(node.body)


def _package_graph(package: Path, base: Path) -> dict[str, set[str]]:
    """Import-time edges between the direct modules of *package* (dotted names relative to
    *base*, the directory that holds the top package)."""
    name = ".".join(package.relative_to(base).parts)
    modules = {path.stem: path for path in package.glob("*.py")}
    subpackages = {path.parent.name for path in package.glob("*/__init__.py")}
    graph: dict[str, set[str]] = {}
    for stem, path in modules.items():
        me = name if stem == "__init__" else f"{name}.{stem}"
        edges = graph.setdefault(me, set())
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _import_time_statements(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.level == 1:  # within this package
                if node.module:
                    targets = [f"{name}.{node.module.split('.')[0]}"]
                else:
                    targets = [f"{name}.{alias.name}" if alias.name in modules
                               or alias.name in subpackages else name for alias in node.names]
            elif node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue  # a parent package: not this package's cycle
            for target in targets:
                if target == me:
                    continue
                prefix = f"{name}."
                if target == name:
                    edges.add(name)
                elif target.startswith(prefix):
                    child = target[len(prefix):].split(".")[0]
                    if child in modules:
                        edges.add(prefix + child)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def import_cycles(root: Path) -> list[str]:
    """Each package's import-time cycles: the modules of each cycle, ``a <-> b <-> c``."""
    found = []
    for init in sorted(root.rglob("__init__.py")):
        for component in _cycles(_package_graph(init.parent, root.parent)):
            found.append(" <-> ".join(component))
    return found


# -- class size ----------------------------------------------------------------------------------


def long_classes(root: Path, limit: int = MAX_CLASS_LINES) -> list[str]:
    found = []
    for path, tree in _modules(root):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno}: {node.name} ({length} lines)")
    return found


# -- the checks on trionet -----------------------------------------------------------------------


def test_only_the_thread_bridge_crosses_threads() -> None:
    assert thread_crossings(ROOT) == []


def test_no_import_time_cycles_inside_packages() -> None:
    assert import_cycles(ROOT) == []


def test_no_class_is_longer_than_600_lines() -> None:
    assert long_classes(ROOT) == []


# -- the checks see what they look for ------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_thread_crossings_are_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "_threads.py": "import threading\nimport trio\ntrio.to_thread.run_sync(print)\n",
        "a.py": "import threading\n",
        "b.py": "from threading import Lock\n",
        "c.py": "import trio\nasync def f():\n    await trio.to_thread.run_sync(print)\n",
        "d.py": "from trio import from_thread\n",
        "e.py": "def f(token):\n    token.run_sync_soon(print)\n",
        "clean.py": "import trio\n# threading in a comment is fine\n",
    })
    found = thread_crossings(root)
    assert [line.split(":")[0] for line in found] == [
        "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d.py", "pkg/e.py"]


def test_import_cycles_are_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "from .a import A\n",
        "a.py": "from .b import B\nA = 1\n",
        "b.py": "from . import a\nB = 2\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n",
        "d.py": "from .c import C\ndef f():\n    from .c import C\n",
        "sub/__init__.py": "from .x import X\n",
        "sub/x.py": "from . import X as _X\nX = 1\n",
    })
    assert import_cycles(root) == ["pkg.a <-> pkg.b", "pkg.sub <-> pkg.sub.x"]


def test_long_classes_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(5))
    root = _tree(tmp_path, {"m.py": f"class Small:\n{body}\n"})
    assert long_classes(root, limit=6) == []
    assert long_classes(root, limit=5) == ["pkg/m.py:1: Small (6 lines)"]


@pytest.mark.parametrize("check", [thread_crossings, import_cycles, long_classes])
def test_checks_accept_an_empty_tree(tmp_path: Path, check: object) -> None:
    root = _tree(tmp_path, {"__init__.py": ""})
    assert check(root) == []  # type: ignore[operator]
