"""Every Python example in docs/framing.rst runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from trionet.testing import python_code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "framing.rst"
BLOCKS = python_code_blocks(DOC)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": f"framing_doc_example_{index}"}
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), namespace)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if "send_eof" in BLOCKS[index]:
        assert "3 frames" in captured.out
