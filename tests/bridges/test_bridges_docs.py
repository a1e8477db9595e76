"""Every Python example in docs/bridges.rst runs (each in a fresh namespace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trionet.testing import python_code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "bridges.rst"

BLOCKS = python_code_blocks(DOC)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": f"bridges_doc_example_{index}"}
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), namespace)
    printed = capsys.readouterr().out
    expected = {0: "{'topic': 'sensors/kitchen', 'payload': '21.5'}",
                1: "200 {'accepted': 'widget'}\n400 {'error': 'no item'}",
                2: "memory://as-mqtt b'accepted widget'\nmemory://as-kafka b'accepted widget'\n"
                   "['orders@memory', 'orders@memory-2']"}
    assert printed.strip() == expected[index]
