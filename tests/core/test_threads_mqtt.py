"""LoopThread: one owned thread running a step function, woken from trio without polling."""

from __future__ import annotations

import socket
import threading

import pytest
import trio

from trionet._threads import LoopThread, TrioPortal


async def test_loop_thread_runs_calls_between_steps_and_wakes_promptly() -> None:
    steps = 0
    loop: LoopThread | None = None

    def step() -> None:
        nonlocal steps
        steps += 1
        assert loop is not None
        loop.wait([], [], None)  # sleeps until a call is queued: no polling

    loop = LoopThread("test-loop", step)
    seen: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(loop.run)
            assert loop.running
            for i in range(50):
                # each call wakes the sleeping thread
                assert await loop.call(lambda i=i: f"{i}:{threading.current_thread().name}") == (
                    f"{i}:test-loop")
            loop.submit(seen.append, "fire and forget")
            assert await loop.call(lambda: loop.in_loop_thread())
            assert not loop.in_loop_thread()
            with pytest.raises(ZeroDivisionError):
                await loop.call(lambda: 1 / 0)
            nursery.cancel_scope.cancel()
    assert seen == ["fire and forget"]
    assert loop.thread is None
    assert steps < 200  # woken per call, not spinning
    with pytest.raises(trio.ClosedResourceError):
        loop.submit(print)
    with pytest.raises(trio.ClosedResourceError):
        await loop.call(print)
    with pytest.raises(RuntimeError):
        await loop.run()


async def test_loop_thread_wait_reports_socket_readiness() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[bytes] = []
    arrived = trio.Event()
    portal = TrioPortal()
    loop: LoopThread | None = None

    def step() -> None:
        assert loop is not None
        readable, _ = loop.wait([a.fileno()], [], 1.0)
        if a.fileno() in readable:
            got.append(a.recv(100))
            portal.call_soon(arrived.set)

    loop = LoopThread("test-loop-socket", step)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(loop.run)
                b.send(b"hello")
                await arrived.wait()
                # writability too
                assert await loop.call(lambda: loop.wait([], [b.fileno()], 1.0)) == (
                    [], [b.fileno()])
                loop.stop()
    finally:
        a.close()
        b.close()
    assert got == [b"hello"]


async def test_a_failing_step_stops_the_thread_and_raises() -> None:
    def step() -> None:
        raise ValueError("broken step")

    exits: list[str] = []
    loop = LoopThread("test-loop-fail", step, on_exit=lambda: exits.append("exit"))
    with trio.fail_after(10), pytest.RaisesGroup(ValueError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop.run)
    assert exits == ["exit"]
    assert not any(t.name == "test-loop-fail" for t in threading.enumerate())
