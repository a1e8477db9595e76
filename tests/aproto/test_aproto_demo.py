"""The demo part and run_sync_task."""

from __future__ import annotations

import threading

import pytest
import trio

from trionet.aproto import run_sync_task
from trionet.demo._aproto import demo


async def test_demo_reports_and_returns() -> None:
    lines: list[str] = []
    with trio.fail_after(20):
        await demo(lines.append)
    text = "\n".join(lines)
    assert "listening on 127.0.0.1:" in text
    assert "'pong': True" in text
    assert "'user': 'demo'" in text
    assert "ERR_NO_COMMAND" in text
    assert "3 replies" in text
    assert lines[-1] == "aproto server stopped"


async def test_run_sync_task() -> None:
    main = threading.get_ident()
    assert await run_sync_task(lambda a, b: a + b, 2, 3) == 5
    assert await run_sync_task(threading.get_ident) != main
    limiter = trio.CapacityLimiter(1)
    assert await run_sync_task(int, "7", limiter=limiter) == 7
    with pytest.raises(ZeroDivisionError):
        await run_sync_task(lambda: 1 / 0)
    with pytest.warns(DeprecationWarning, match="abandon_on_cancel"):
        assert await run_sync_task(int, "1", cancellable=True) == 1


async def test_run_sync_task_cancellation() -> None:
    finished = threading.Event()
    release = threading.Event()

    # Default: a caller cancelled while the thread runs waits for it: nothing outlives the call.
    with trio.CancelScope() as scope:

        def cancels_its_caller() -> None:
            trio.from_thread.run_sync(scope.cancel)
            finished.set()

        await run_sync_task(cancels_its_caller)
        assert finished.is_set()  # the call returned only once the thread was done
        await trio.lowlevel.checkpoint()  # the pending cancellation is delivered here
    assert scope.cancelled_caught

    # abandon_on_cancel=True: the caller returns at once; the thread finishes on its own.
    finished.clear()

    def blocked() -> None:
        release.wait(10)
        finished.set()

    with trio.move_on_after(0.01):
        await run_sync_task(blocked, abandon_on_cancel=True)
    assert not finished.is_set()
    release.set()
    await trio.to_thread.run_sync(finished.wait, 10)
    assert finished.is_set()
