"""The thread-bridge primitives aproto crosses threads with: TrioPortal.call, run_abandoning,
ThreadLock and in_main_thread."""

from __future__ import annotations

import threading

import pytest
import trio

from trionet._threads import (
    ThreadLock,
    TrioPortal,
    in_main_thread,
    run_abandoning,
    run_blocking,
)


async def test_portal_call_from_the_trio_thread_runs_at_once() -> None:
    portal = TrioPortal()
    seen: list[int] = []
    assert portal.call(seen.append, 1)
    assert seen == [1]  # before any checkpoint


async def test_portal_call_from_another_thread_runs_in_trio() -> None:
    portal = TrioPortal()
    done = trio.Event()
    ran_in: list[str] = []

    def in_trio() -> None:
        ran_in.append(threading.current_thread().name)
        done.set()

    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(portal.call(in_trio)))
    thread.start()
    with trio.fail_after(10):
        await done.wait()
    thread.join()
    assert outcome == [True]
    assert ran_in == [threading.current_thread().name]


def test_portal_call_after_trio_finished_is_dropped() -> None:
    async def make() -> TrioPortal:
        return TrioPortal()

    portal = trio.run(make)
    called: list[int] = []
    assert portal.call(called.append, 1) is False
    assert called == []


async def test_run_abandoning_returns_and_raises() -> None:
    assert await run_abandoning(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await run_abandoning(lambda: 1 / 0)


async def test_run_abandoning_leaves_a_blocked_thread_when_cancelled() -> None:
    release = threading.Event()
    finished = threading.Event()

    def blocked() -> None:
        release.wait(30)
        finished.set()

    with trio.move_on_after(0.05) as scope:
        await run_abandoning(blocked)
    assert scope.cancelled_caught
    assert not finished.is_set()  # the caller did not wait for the thread
    release.set()
    assert await run_blocking(finished.wait, 30)  # the abandoned thread ends too


async def test_thread_lock_excludes_other_threads() -> None:
    lock = ThreadLock()
    entered = threading.Event()

    def take() -> None:
        with lock:
            entered.set()

    with lock:
        assert lock.locked
        thread = threading.Thread(target=take)
        thread.start()
        assert not entered.wait(0.05)  # blocked while we hold it
    thread.join(30)
    assert entered.is_set()
    assert not lock.locked


def test_in_main_thread() -> None:
    assert in_main_thread()
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(in_main_thread()))
    thread.start()
    thread.join()
    assert answers == [False]
