"""Headless Chromium driven over the DevTools protocol, for the tests that need a real browser
(``tests/stack/test_live_browser.py``, ``tests/asgi/test_asgi_sse_browser.py``; imported as
``browser_support``). Chromium comes from Debian's ``chromium`` package (``scripts/test.sh``
installs it)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from trionet.demo._asgi import http_request

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, ("chromium is not installed: this test needs Debian's 'chromium' package "
                   "(scripts/test.sh installs it: apt-get install chromium)")
    return found


async def _read_stderr(stream: trio.abc.ReceiveStream, output: bytearray,
                       listening: trio.Event) -> None:
    # Drained to the end, so that Chromium never blocks on a full pipe.
    async for chunk in stream:
        if not listening.is_set():
            output += chunk
            if b"DevTools listening on ws://" in output and output.endswith(b"\n"):
                listening.set()
    listening.set()  # exited


@asynccontextmanager
async def headless_chromium(profile: Path) -> AsyncIterator[str]:
    """Start Chromium on about:blank with its profile in *profile*; yield its DevTools HTTP
    address (host:port)."""
    process = await trio.lowlevel.open_process(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    output = bytearray()
    listening = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_stderr, process.stderr, output, listening)
            with trio.fail_after(30):
                await listening.wait()
            assert b"DevTools listening on ws://" in output, (
                f"chromium exited: {output.decode(errors='replace')}")
            line = output.split(b"DevTools listening on ws://", 1)[1].split(b"\n", 1)[0]
            try:
                yield line.decode().split("/", 1)[0]
            finally:
                process.send_signal(signal.SIGTERM)  # our own process, by PID
                with trio.move_on_after(10) as waited:
                    await process.wait()
                if waited.cancelled_caught:
                    process.kill()
                    await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stderr.aclose()


class DevTools:
    """One page target over the DevTools protocol: commands by id, events collected."""

    def __init__(self, connection: WebSocketConnection) -> None:
        self._connection = connection
        self._next = 0

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        await self._connection.send_message(json.dumps(
            {"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(await self._connection.get_message())
            if reply.get("id") == ident:
                assert "error" not in reply, reply
                result: dict[str, Any] = reply["result"]
                return result

    async def until_event(self, method: str) -> None:
        while json.loads(await self._connection.get_message()).get("method") != method:
            pass

    async def evaluate(self, expression: str) -> Any:
        """Evaluate in the page, awaiting a promise; return the value."""
        result = await self.command("Runtime.evaluate", expression=expression,
                                    awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


@asynccontextmanager
async def browser_tab(profile: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium (profile in *profile*) and its first page, with page events on."""
    async with headless_chromium(profile) as devtools_address:
        host, port = devtools_address.rsplit(":", 1)
        status, _, body = await http_request(host, int(port), "GET", "/json/list")
        assert status == 200
        page = next(t for t in json.loads(body) if t["type"] == "page")
        async with open_websocket_url(page["webSocketDebuggerUrl"]) as connection:
            tab = DevTools(connection)
            await tab.command("Page.enable")
            yield tab
