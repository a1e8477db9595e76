"""The Kafka package's layout: the engine seam and the one thread bridge hold."""

from __future__ import annotations

import ast
from pathlib import Path

import trionet.kafka

PACKAGE = Path(trionet.kafka.__file__).parent
CROSSINGS = ("to_thread", "from_thread", "run_sync_soon")


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_no_kafka_module_crosses_threads_itself() -> None:
    # Every crossing between trio and OS threads goes through trionet._threads.
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert "threading" not in _imports(tree), path.name
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert not names & set(CROSSINGS), (path.name, names & set(CROSSINGS))


def test_only_the_kafka_python_engine_imports_kafka_python() -> None:
    for path in _modules():
        imported = _imports(ast.parse(path.read_text(encoding="utf-8")))
        library = {name for name in imported if name == "kafka" or name.startswith("kafka.")}
        if library:
            assert path.name == "_kafka_python.py", (path.name, library)


def test_only_the_confluent_engine_imports_confluent_kafka() -> None:
    for path in _modules():
        imported = _imports(ast.parse(path.read_text(encoding="utf-8")))
        if any(name.split(".")[0] == "confluent_kafka" for name in imported):
            assert path.name == "_confluent.py", path.name
