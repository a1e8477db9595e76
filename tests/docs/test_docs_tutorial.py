"""The tutorial, how-to and timeouts pages: every code example they show is run by the suite.

The example programs themselves (``docs/examples/tutorial_*.py`` and ``howto_*.py``) run as
subprocesses in ``tests/core/test_docs_examples.py``, with every other file there; the examples
that need real servers are the tests of this directory. This module checks that the pages show
nothing else, and runs the finished tutorial program the way its readers will: as a server,
stopped by a signal from outside.
"""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = [
    DOCS / "tutorial.rst",
    DOCS / "timeouts.rst",
    DOCS / "howto" / "embedding.rst",
    DOCS / "howto" / "hypercorn.rst",
    DOCS / "howto" / "testing.rst",
    DOCS / "howto" / "migrating.rst",
]
INCLUDE = re.compile(r"^\.\. literalinclude:: (\S+)\n((?:   :[\w-]+:.*\n)*)", re.MULTILINE)
OPTION = re.compile(r"^   :([\w-]+):(.*)$", re.MULTILINE)


def includes(page: Path) -> list[tuple[Path, dict[str, str]]]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in INCLUDE.finditer(text):
        options = {name: value.strip() for name, value in OPTION.findall(match.group(2))}
        found.append(((page.parent / match.group(1)).resolve(), options))
    return found


ALL_INCLUDES = [(page, path, options) for page in PAGES for path, options in includes(page)]


def top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names.update(
                    f"{node.name}.{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                )
    return names


def test_the_pages_include_their_examples() -> None:
    assert all(page.exists() for page in PAGES)
    included = {path.name for _, path, _ in ALL_INCLUDES}
    for step in range(1, 7):
        assert f"tutorial_step{step}.py" in included
    assert {"test_docs_howto_testing.py", "test_docs_howto_hypercorn.py"} <= included


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_is_only_shown_from_files_that_run(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert ".. code-block:: python" not in text
    assert ".. code:: python" not in text


@pytest.mark.parametrize(
    ("page", "path", "options"),
    ALL_INCLUDES,
    ids=[f"{page.name}:{path.name}:{i}" for i, (page, path, _) in enumerate(ALL_INCLUDES)],
)
def test_each_include_points_at_code_that_runs(
    page: Path, path: Path, options: dict[str, str]
) -> None:
    assert path.is_file(), f"{page.name} includes a missing file {path}"
    if path.parent == EXAMPLES:
        # tests/core/test_docs_examples.py runs every docs/examples/*.py as a program.
        assert path.suffix == ".py"
    else:
        assert path.parent == ROOT / "tests" / "docs" and path.name.startswith("test_"), path
    text = path.read_text(encoding="utf-8")
    if "pyobject" in options:
        assert options["pyobject"] in top_level_names(path)
    start = text.find(options.get("start-after", ""))
    assert start >= 0, f"{options['start-after']!r} is not in {path.name}"
    if "end-before" in options:
        assert text.find(options["end-before"], start) > start, options["end-before"]


async def _wait_for(stream: trio.abc.ReceiveStream, pattern: re.Pattern[bytes]) -> bytes:
    output = b""
    while not pattern.search(output):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"the program ended early:\n{output.decode()}")
        output += chunk
    return output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_the_finished_tutorial_serves_until_a_signal(signum: signal.Signals) -> None:
    command = [sys.executable, "-u", str(EXAMPLES / "tutorial_step6.py"), "--serve"]
    run = partial(
        trio.run_process, command, cwd=EXAMPLES, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, check=False,
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(run)
            assert process.stdout is not None
            output = await _wait_for(process.stdout, re.compile(rb"HTTP (http://\S+),"))
            found = re.search(rb"HTTP (http://\S+),", output)
            assert found is not None
            async with httpx.AsyncClient(base_url=found.group(1).decode()) as client:
                assert (await client.get("/readyz")).json() == {"status": "ready"}
                response = await client.get("/greet/de/signal")
                assert response.json() == {"greeting": "hallo signal"}
            process.send_signal(signum)
            async for chunk in process.stdout:
                output += chunk
    text = output.decode()
    assert process.returncode == 0, text
    assert f"{signum.name}: shutting down" in text
    assert text.rstrip().endswith("stopped")
