"""Every Python example in docs/bus.rst runs (each in a fresh namespace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trionet.testing import python_code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "bus.rst"


BLOCKS = python_code_blocks(DOC)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"bus_doc_example_{index}"}
    # dont_inherit: the examples run without this module's `from __future__ import annotations`
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec", dont_inherit=True), namespace)
