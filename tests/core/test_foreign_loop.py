"""A trionet ASGI application served on asyncio (uvicorn, Hypercorn's default worker) says in
one line that it needs trio, instead of trio's ``AttributeError: 'RunContext' object has no
attribute 'runner'`` from inside a nursery.

The servers run in subprocesses: uvicorn if it is installed (the ``bench`` extra), else
Hypercorn's asyncio worker.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import trio

PATIENCE = 60

WEB_APP = textwrap.dedent('''
    from trionet.asgi import ASGIApplication, Response

    app = ASGIApplication()


    @app.route("/")
    async def index(request):
        return Response.text("hello")
''')

HINT = (
    "trionet apps run on trio, not asyncio: serve this one with 'trionet serve MODULE:APP' "
    "or 'hypercorn -k trio MODULE:APP'"
)

HAVE_UVICORN = importlib.util.find_spec("uvicorn") is not None


def _server_command(*, lifespan: bool) -> list[str]:
    if HAVE_UVICORN:
        return [sys.executable, "-m", "uvicorn", "foreign_web:app", "--host", "127.0.0.1",
                "--port", "0", "--lifespan", "on" if lifespan else "off"]
    # Hypercorn's asyncio worker always runs the lifespan (the request test then needs
    # the startup to be skipped some other way; uvicorn is the primary target).
    return [sys.executable, "-m", "hypercorn", "-k", "asyncio", "--bind", "127.0.0.1:0",
            "foreign_web:app"]


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *sys.path])
    return env


def test_lifespan_on_asyncio_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "foreign_web.py").write_text(WEB_APP)
    proc = subprocess.run(_server_command(lifespan=True), cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=PATIENCE)
    output = proc.stdout + proc.stderr
    assert HINT in output, output
    assert "RunContext" not in output, output
    if HAVE_UVICORN:  # Hypercorn prints its own traceback for any failed startup
        assert proc.returncode != 0, output
        assert "Traceback" not in output, output
        assert sum(HINT in line for line in output.splitlines()) == 1, output


@pytest.mark.skipif(not HAVE_UVICORN, reason="uvicorn (the bench extra) is not installed; "
                    "the lifespan test covers Hypercorn's asyncio worker")
async def test_request_on_asyncio_gets_500_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "foreign_web.py").write_text(WEB_APP)
    output = ""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(
            trio.run_process, _server_command(lifespan=False), cwd=tmp_path,
            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
        ))
        assert process.stdout is not None
        try:
            with trio.fail_after(PATIENCE):
                while (found := re.search(r"running on http://127\.0\.0\.1:(\d+)", output)) is None:
                    chunk = await process.stdout.receive_some()
                    assert chunk, output
                    output += chunk.decode(errors="replace")
                stream = await trio.open_tcp_stream("127.0.0.1", int(found[1]))
                async with stream:
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    response = b""
                    while chunk := await stream.receive_some():
                        response += chunk
                while HINT not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, output
                    output += chunk.decode(errors="replace")
        finally:
            process.terminate()  # the server we started, by its PID
        async for chunk in process.stdout:
            output += chunk.decode(errors="replace")
    assert response.startswith(b"HTTP/1.1 500 "), response
    assert HINT.encode() in response, response
    assert "Traceback" not in output, output
    assert "RunContext" not in output, output
