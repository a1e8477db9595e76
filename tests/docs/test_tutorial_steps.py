"""The tutorial shows each step's program whole, with what changed since the step before marked.

The programs are ``docs/examples/tutorial_step1.py`` to ``tutorial_step6.py``, which
``tests/core/test_docs_examples.py`` runs (``tests/docs/test_docs_tutorial.py`` also runs step 6
as a server and stops it with SIGINT and SIGTERM). Here: the page includes each of them whole,
once, and its ``:emphasize-lines:`` are exactly the lines that differ from the step before, so
the page can be copied from and its highlights never go stale when a step is edited.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = DOCS / "tutorial.rst"
STEPS = range(1, 7)
INCLUDE = re.compile(r"^\.\. literalinclude:: (\S+)\n((?:   :[\w-]+:.*\n)*)", re.MULTILINE)
OPTION = re.compile(r"^   :([\w-]+):(.*)$", re.MULTILINE)
# Options that would show only part of a file.
PARTIAL = {"pyobject", "lines", "start-after", "end-before", "start-at", "end-at"}


def step_file(step: int) -> Path:
    return DOCS / "examples" / f"tutorial_step{step}.py"


def tutorial_includes() -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for match in INCLUDE.finditer(PAGE.read_text(encoding="utf-8")):
        options = {name: value.strip() for name, value in OPTION.findall(match.group(2))}
        found.setdefault(match.group(1), []).append(options)
    return found


def changed_lines(step: int) -> list[int]:
    """Line numbers (from 1) of ``step``'s file that are new or changed since the step before.

    A run of blank lines between two changed lines counts as changed, so a new block is
    highlighted in one piece.
    """
    before = step_file(step - 1).read_text(encoding="utf-8").splitlines()
    after = step_file(step).read_text(encoding="utf-8").splitlines()
    changed: set[int] = set()
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for tag, _, _, first, last in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            changed.update(range(first + 1, last + 1))
    for number in range(1, len(after) + 1):
        if number in changed or after[number - 1].strip():
            continue
        above = next((n for n in range(number - 1, 0, -1) if after[n - 1].strip()), None)
        below = next((n for n in range(number + 1, len(after) + 1) if after[n - 1].strip()), None)
        if above in changed and below in changed:
            changed.add(number)
    return sorted(changed)


def as_ranges(numbers: list[int]) -> str:
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


@pytest.mark.parametrize("step", STEPS)
def test_each_step_is_shown_whole_once(step: int) -> None:
    includes = tutorial_includes()
    assert set(includes) == {f"examples/tutorial_step{n}.py" for n in STEPS}, (
        "the tutorial shows only whole step files"
    )
    shown = includes[f"examples/tutorial_step{step}.py"]
    assert len(shown) == 1, f"tutorial_step{step}.py is shown in {len(shown)} pieces"
    (options,) = shown
    assert not PARTIAL & set(options), options
    assert options.get("caption") == f"tutorial_step{step}.py"


@pytest.mark.parametrize("step", STEPS[1:])
def test_the_highlighted_lines_are_the_changes(step: int) -> None:
    (options,) = tutorial_includes()[f"examples/tutorial_step{step}.py"]
    expected = as_ranges(changed_lines(step))
    assert options.get("emphasize-lines") == expected, (
        f"tutorial_step{step}.py changed: use ':emphasize-lines: {expected}'"
    )


def test_the_step_files_are_whole_programs() -> None:
    for step in STEPS:
        text = step_file(step).read_text(encoding="utf-8")
        assert 'if __name__ == "__main__":\n    trio.run(main' in text, step
        assert text.startswith(f'"""Tutorial, step {step}:'), step
