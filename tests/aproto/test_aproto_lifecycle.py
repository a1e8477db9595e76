"""Server lifecycle: setup/shutdown hooks on every path, stop(), start() in a thread, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
import trio
from aproto_helpers import RawConn, echo_server, start

from trionet.aproto import Client, HandlerClient, Packet, Server


class HookedServer(Server):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("logging_level", 100)
        super().__init__("127.0.0.1", 0, **kwargs)
        self.events: list[str] = []

    async def setup(self) -> None:
        self.events.append("setup")

    async def shutdown(self) -> None:
        await trio.sleep(0.01)  # shielded: runs even though the server was cancelled
        self.events.append("shutdown")


async def test_hooks_run_when_the_nursery_is_cancelled() -> None:
    server = HookedServer()
    async with trio.open_nursery() as nursery:
        await start(nursery, server)
        assert server.events == ["setup"]
        nursery.cancel_scope.cancel()
    assert server.events == ["setup", "shutdown"]


async def test_stop_returns_from_serve_and_runs_shutdown() -> None:
    server = HookedServer()

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send(packet)

    async with trio.open_nursery() as nursery:
        port = await start(nursery, server)
        conn = await RawConn.open(port)
        await conn.send_fields({"a": 1})
        assert await conn.reply() == {"a": 1}
        server.stop()
        server.stop()  # idempotent
        await conn.expect_eof()  # the idle connection is closed
        await conn.aclose()
    assert server.events == ["setup", "shutdown"]
    with pytest.raises(RuntimeError, match="not running"):
        server.stop()


async def test_stop_lets_an_in_flight_handler_finish() -> None:
    server = Server("127.0.0.1", 0, logging_level=100)
    started = trio.Event()

    @server.add_handler()
    async def slow(client: HandlerClient, packet: Packet) -> None:
        started.set()
        await trio.sleep(0.2)
        await client.send({"finished": True})

    done = trio.Event()

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await server.serve(task_status=task_status)
        done.set()

    async with trio.open_nursery() as inner:
        port = await inner.start(run)
        conn = await RawConn.open(port)
        await conn.send_fields({})
        await started.wait()
        server.stop()
        assert await conn.reply() == {"finished": True}
        await conn.expect_eof()
        await conn.aclose()
    assert done.is_set()


async def test_stop_grace_period_cancels_stuck_handlers() -> None:
    server = HookedServer(shutdown_timeout=0.2)
    started = trio.Event()

    @server.add_handler()
    async def stuck(client: HandlerClient, packet: Packet) -> None:
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await start(nursery, server)
        conn = await RawConn.open(port)
        await conn.send_fields({})
        await started.wait()
        server.stop()
        await conn.expect_eof()
        await conn.aclose()
    assert server.events == ["setup", "shutdown"]


async def test_setup_failure_propagates_without_shutdown() -> None:
    class Broken(HookedServer):
        async def setup(self) -> None:
            raise ValueError("no database")

    server = Broken()
    with pytest.raises(ValueError, match="no database"):
        await server.serve()
    assert server.events == []


async def test_bind_failure_raises_oserror_and_runs_shutdown(nursery: trio.Nursery) -> None:
    first = echo_server()
    port = await start(nursery, first)
    second = HookedServer()
    second.port = port
    with pytest.raises(OSError):  # EADDRINUSE, spelled differently per OS
        await second.serve()
    assert second.events == ["setup", "shutdown"]


async def test_serving_twice_is_refused(nursery: trio.Nursery) -> None:
    server = echo_server()
    await start(nursery, server)
    with pytest.raises(RuntimeError, match="already running"):
        await server.serve()


def test_start_in_a_thread_with_the_blocking_client() -> None:
    server = HookedServer()

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send(Packet({"echo": dict(packet)}))

    thread = threading.Thread(target=server.start)
    thread.start()
    try:
        for _ in range(500):
            if server.running and server.port:
                break
            threading.Event().wait(0.01)
        with Client(tls=False, timeout=10) as client:
            client.connect("127.0.0.1", server.port)
            for i in range(5):
                assert client.request({"i": i}) == {"echo": {"i": i}}
    finally:
        server.stop()  # from another thread
        thread.join(10)
    assert not thread.is_alive()
    assert server.events == ["setup", "shutdown"]


SIGNAL_SCRIPT = textwrap.dedent(
    """
    from trionet.aproto import Server

    class S(Server):
        async def setup(self):
            print("setup", flush=True)

        async def shutdown(self):
            print("shutdown", flush=True)

    S("127.0.0.1", 0).start()
    print("returned", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_start_logs_and_stops_gracefully_on_signals(signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline().strip() == "setup"
        # start() logs with console_format on stderr when logging is not configured.
        line = proc.stderr.readline()
        assert line.startswith("[INFO] ")
        assert "serving AsyncAProto on 127.0.0.1:" in line
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # pragma: no cover - only if the test failed
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.split() == ["shutdown", "returned"]
    assert "shutting down" in err
