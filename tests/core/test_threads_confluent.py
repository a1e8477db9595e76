"""RepeatingThread and ServingWait (trionet/_threads.py), the confluent Kafka engine's
crossings: a thread that serves a library's callbacks between start() and join(), and a foreign
thread that waits for trio while running the calls trio sends it."""

from __future__ import annotations

import threading

import pytest
import trio

from trionet._threads import RepeatingThread, ServingWait, run_blocking


async def test_repeating_thread_steps_until_joined_and_is_gone_after() -> None:
    steps: list[str] = []
    stepped = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def step() -> None:
        steps.append(threading.current_thread().name)
        if len(steps) == 3:
            token.run_sync_soon(stepped.set)
        threading.Event().wait(0.001)

    poller = RepeatingThread("trionet-test-poller", step)
    assert not poller.running
    poller.start()
    assert poller.running
    await stepped.wait()
    await poller.join()
    assert not poller.running
    count = len(steps)
    assert count >= 3 and set(steps) == {"trionet-test-poller"}
    await trio.sleep(0.01)
    assert len(steps) == count  # no step after join()
    assert "trionet-test-poller" not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="runs once"):
        poller.start()


async def test_repeating_thread_reraises_its_step_error_and_joins_when_never_started() -> None:
    failed = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def step() -> None:
        token.run_sync_soon(failed.set)
        raise ValueError("library failed")

    poller = RepeatingThread("trionet-test-failing", step)
    poller.start()
    await failed.wait()  # (joined before its first step, it would just not step)
    with pytest.raises(ValueError, match="library failed"):
        await poller.join()
    await RepeatingThread("trionet-test-idle", step).join()  # never started: returns


async def test_serving_wait_runs_trio_calls_on_the_waiting_thread() -> None:
    wait = ServingWait()
    ran_on: list[str] = []

    def callback() -> bool:  # a library callback on its own thread
        threading.current_thread().name = "library-thread"
        return wait.serve(10)

    async def trio_side() -> None:
        token = trio.lowlevel.current_trio_token()
        for _ in range(2):
            done = trio.Event()

            def call(done: trio.Event = done) -> None:
                ran_on.append(threading.current_thread().name)
                token.run_sync_soon(done.set)

            wait.submit(call)
            await done.wait()
        wait.finish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_side)
        finished = await run_blocking(callback)
    assert finished and wait.finished
    assert ran_on == ["library-thread", "library-thread"]
    # After the wait, a call runs on the caller's thread instead of being lost.
    late: list[int] = []
    wait.submit(lambda: late.append(1))
    assert late == [1]


async def test_serving_wait_times_out() -> None:
    wait = ServingWait()
    assert await run_blocking(wait.serve, 0.05) is False
    assert wait.finished
