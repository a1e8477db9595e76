"""Every Python example in docs/security.rst runs (the tls= vocabulary: mutual TLS, reload)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trionet.testing import python_code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.rst"
BLOCKS = python_code_blocks(DOC)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": f"security_doc_example_{index}"}
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), namespace)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if "no client certificate" in BLOCKS[index]:
        assert "no client certificate, no service" in captured.out
