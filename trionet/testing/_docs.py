"""Run the Python examples of a reStructuredText page (keeps documentation honest)."""

from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["python_code_blocks"]


def python_code_blocks(path: str | Path) -> list[str]:
    """The bodies of every ``.. code-block:: python`` directive in the page at *path*, dedented,
    in order, so that a test can ``exec`` each one."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
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
