"""The thread bridge: no thread outlives its call or nursery, cancellation is prompt."""

from __future__ import annotations

import socket
import threading
from functools import partial

import pytest
import trio
import trio.testing

from trionet._threads import ThreadWorker, TrioPortal, run_blocking


async def test_run_blocking_returns_and_raises() -> None:
    assert await run_blocking(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await run_blocking(lambda: 1 / 0, on_cancel=lambda: None)
    assert await run_blocking(pow, 2, 10, on_cancel=lambda: None) == 1024


async def test_run_blocking_cancel_unblocks_the_thread() -> None:
    """A recv() that would block forever ends as soon as the caller is cancelled."""
    before = threading.active_count()
    a, b = socket.socketpair()
    cancelled_calls = []
    raised_bare = False

    def on_cancel() -> None:
        cancelled_calls.append(True)
        a.shutdown(socket.SHUT_RDWR)

    try:
        with trio.move_on_after(0.2) as scope:
            try:
                await run_blocking(a.recv, 10, on_cancel=on_cancel)
            except trio.Cancelled:  # bare, not wrapped in an ExceptionGroup
                raised_bare = True
                raise
        assert scope.cancelled_caught
        assert raised_bare
        assert cancelled_calls == [True]
    finally:
        a.close()
        b.close()
    # trio's thread cache may keep an idle worker; none of *ours* is still running a call.
    for thread in threading.enumerate():
        assert "recv" not in repr(getattr(thread, "_target", None))
    assert threading.active_count() <= before + 1


async def test_run_blocking_closes_what_a_cancelled_call_built_anyway() -> None:
    # A Kafka client whose construction finished although its start was cancelled was dropped
    # without being closed (its threads and sockets stayed open): on_discard gets it now.
    for finishes in (True, False):
        gate = threading.Event()
        built = object()
        discarded: list[object] = []

        def build(finishes: bool = finishes, gate: threading.Event = gate,
                  built: object = built) -> object:
            gate.wait()
            if not finishes:
                raise ConnectionError("the cancelled bootstrap gave up")
            return built

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(run_blocking, build, on_cancel=gate.set,
                                           on_discard=discarded.append))
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        assert discarded == ([built] if finishes else [])


async def test_worker_runs_calls_in_order_on_one_thread() -> None:
    worker = ThreadWorker("test-worker")
    seen: list[tuple[int, str]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)

        def record(i: int) -> str:
            seen.append((i, threading.current_thread().name))
            return f"r{i}"

        results = [await worker.call(record, i) for i in range(5)]
        assert results == [f"r{i}" for i in range(5)]
        with pytest.raises(KeyError):
            await worker.call({}.__getitem__, "missing")
        assert worker.thread is not None
        assert worker.thread.name == "test-worker"
        assert worker.in_worker_thread() is False
        nursery.cancel_scope.cancel()
    assert [i for i, _ in seen] == list(range(5))
    assert {name for _, name in seen} == {"test-worker"}
    after: threading.Thread | None = getattr(worker, "thread")  # noqa: B009 - defeat narrowing
    assert after is None
    assert "test-worker" not in [t.name for t in threading.enumerate()]
    with pytest.raises(trio.ClosedResourceError):
        await worker.call(int)


async def test_worker_idle_and_on_exit_run_on_the_thread() -> None:
    idle_threads: set[str] = set()
    exited = threading.Event()
    idled = trio.Event()
    portal = TrioPortal()

    def idle() -> None:
        idle_threads.add(threading.current_thread().name)
        portal.call_soon(idled.set)

    worker = ThreadWorker("idle-worker", idle=idle, idle_interval=0.001, on_exit=exited.set)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await idled.wait()
        worker.stop()
    assert idle_threads == {"idle-worker"}
    assert exited.is_set()


async def test_worker_call_cancelled_still_leaves_worker_usable() -> None:
    worker = ThreadWorker("slow-worker")
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        with trio.move_on_after(0.05) as scope:
            await worker.call(gate.wait, 5)
        assert scope.cancelled_caught
        gate.set()
        assert await worker.call(lambda: "still here") == "still here"
        nursery.cancel_scope.cancel()


async def test_portal_delivers_from_foreign_thread() -> None:
    send, receive = trio.open_memory_channel[int](10)
    portal = TrioPortal()

    def produce() -> None:
        for i in range(3):
            portal.call_soon(send.send_nowait, i)

    await trio.to_thread.run_sync(produce)
    assert [await receive.receive() for _ in range(3)] == [0, 1, 2]
