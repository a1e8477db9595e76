"""LoopThread's shared mode (try_call) and the Mailbox from a foreign thread to trio."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import trio

from trionet._threads import LoopThread, Mailbox


def _idle_loop(name: str, *, shared: bool = True) -> LoopThread:
    """A loop whose step only waits (for nothing but wake-ups) for up to 10 s."""
    loop: LoopThread

    def step() -> None:
        loop.wait([], [], 10.0)

    loop = LoopThread(name, step, shared=shared)
    return loop


async def _eventually(attempt: Callable[[], bool]) -> None:
    """Retry *attempt* until it returns True. It depends on the loop thread reaching its wait,
    which nothing reports, so it is retried (for at most 10 s)."""
    with trio.fail_after(10):
        while True:
            if attempt():
                return
            await trio.sleep(0.01)


async def _until(condition: threading.Event) -> None:
    with trio.fail_after(10):
        while not condition.is_set():
            await trio.to_thread.run_sync(condition.wait, 0.05)


async def test_try_call_runs_on_the_calling_thread_while_the_loop_waits() -> None:
    loop = _idle_loop("shared-idle")
    ran_on: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        # The loop thread is (or soon is) waiting in poll: the trio thread runs the call.
        await _eventually(lambda: loop.try_call(
            lambda: ran_on.append(threading.current_thread().name)))
        assert ran_on == [threading.current_thread().name]
        nursery.cancel_scope.cancel()
    # Stopped: nothing runs any more.
    assert loop.try_call(ran_on.append, "late") is False
    assert ran_on == [threading.current_thread().name]


async def test_try_call_never_overtakes_a_queued_call() -> None:
    loop = _idle_loop("shared-order")
    order: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)
        order.append("queued")

    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        loop.submit(slow)
        await _until(started)
        # The queued call runs (holding the loop): try_call refuses, so the caller submits.
        assert loop.try_call(order.append, "direct") is False
        loop.submit(order.append, "submitted")
        release.set()
        await _eventually(lambda: loop.try_call(order.append, "direct"))
        nursery.cancel_scope.cancel()
    assert order == ["queued", "submitted", "direct"]


async def test_try_call_refuses_while_a_queued_call_waits_inside_it() -> None:
    # A queued call that itself waits on the loop's sockets frees the lock meanwhile; try_call
    # must still refuse: that call has not finished.
    loop: LoopThread
    inside = threading.Event()
    release = threading.Event()

    def step() -> None:
        loop.wait([], [], 10.0)

    def waits() -> None:
        inside.set()
        while not release.is_set():
            loop.wait([], [], 0.01)

    loop = LoopThread("shared-busy", step, shared=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        loop.submit(waits)
        await _until(inside)
        for _ in range(20):
            assert loop.try_call(lambda: None) is False
            await trio.sleep(0.005)
        release.set()
        nursery.cancel_scope.cancel()


async def test_try_call_needs_shared_mode_and_propagates_errors() -> None:
    plain = _idle_loop("not-shared", shared=False)
    with pytest.raises(RuntimeError, match="shared=True"):
        plain.try_call(lambda: None)
    loop = _idle_loop("shared-error")
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        with trio.fail_after(10):
            while True:
                try:
                    if loop.try_call(lambda: 1 / 0):
                        pytest.fail("the call raised: try_call cannot return True")
                except ZeroDivisionError:
                    break
                await trio.sleep(0.01)
        # The lock was released: the loop goes on, and so do later calls.
        assert await loop.call(sum, [1, 2]) == 3
        nursery.cancel_scope.cancel()


async def test_mailbox_delivers_in_order_from_a_thread_and_keeps_the_rest() -> None:
    got: list[int] = []
    all_in = trio.Event()

    def deliver(n: int) -> None:
        got.append(n)
        if len(got) == 1001:
            all_in.set()

    mailbox: Mailbox[int] = Mailbox(deliver)
    mailbox.put(-1)  # before serve(): delivered when it starts
    async with trio.open_nursery() as nursery:
        await nursery.start(mailbox.serve)
        assert got == [-1]

        def producer() -> None:
            for n in range(1000):
                mailbox.put(n)

        await trio.to_thread.run_sync(producer)
        with trio.fail_after(10):
            await all_in.wait()
        nursery.cancel_scope.cancel()
    assert got == [-1, *range(1000)]
    mailbox.put(1000)  # after serve() ended: kept until asked for
    assert got[-1] == 999
    mailbox.deliver_pending()
    assert got[-1] == 1000
