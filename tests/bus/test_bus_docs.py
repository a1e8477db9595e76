"""Every Python example in docs/bus.rst runs (each in a fresh namespace)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "bus.rst"


def python_blocks() -> list[str]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == ".. code-block:: python":
            i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)))
        else:
            i += 1
    return blocks


BLOCKS = python_blocks()


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"bus_doc_example_{index}"}
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), namespace)
