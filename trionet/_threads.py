"""The thread bridge: the only module in trionet that crosses between trio and OS threads.

Blocking libraries (paho-mqtt, kafka-python, smtplib, imaplib) run on threads; trio code talks to
them through three tools, each of which keeps every thread inside the nursery or call that
started it:

* :func:`run_blocking` runs one blocking call on a worker thread and waits for it. If the caller
  is cancelled, an ``on_cancel`` callback (for example: shut the socket down) makes the call
  return promptly; the thread is always waited for, never abandoned.
* :class:`ThreadWorker` is one dedicated thread that runs submitted calls in order, for
  libraries that are not thread-safe (a kafka-python consumer, a paho client): every call on the
  object happens on its thread. It may run an *idle* function between calls (a network loop
  step). It lives in a nursery: ``await nursery.start(worker.run)``; cancelling that nursery
  stops the thread and waits for it.
* :class:`TrioPortal` lets a foreign thread hand a plain callable to trio
  (``TrioToken.run_sync_soon``: no thread hop back and forth per message, ≈8 µs), typically a
  memory channel's ``send_nowait``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import outcome
import trio

__all__ = ["ThreadWorker", "TrioPortal", "run_blocking"]

T = TypeVar("T")

_STOP: Final = object()


async def run_blocking(
    fn: Callable[..., T],
    *args: Any,
    on_cancel: Callable[[], None] | None = None,
    limiter: trio.CapacityLimiter | None = None,
) -> T:
    """Run ``fn(*args)`` on a worker thread and return its result.

    The thread is never abandoned: this call returns only once ``fn`` has returned. If the
    calling task is cancelled while ``fn`` runs, *on_cancel* is called (in the trio thread) to
    make ``fn`` return early, for example by shutting down the socket it blocks on; then
    :class:`trio.Cancelled` is raised and whatever ``fn`` returned or raised is discarded.
    Without *on_cancel*, cancellation waits for ``fn`` to finish by itself, so ``fn`` should
    carry its own timeouts (socket timeouts).

    Args:
        fn: the blocking callable.
        *args: its positional arguments.
        on_cancel: called once if the caller is cancelled while ``fn`` runs.
        limiter: a :class:`trio.CapacityLimiter` bounding the number of threads (trio's default
            limiter if None). Waiting for a token is not cancellable once *on_cancel* is given.
    """
    if on_cancel is None:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    result: outcome.Outcome[T] | None = None
    callback = on_cancel

    async def watch_for_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if result is None:
                callback()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_for_cancel)
        with trio.CancelScope(shield=True):
            result = await trio.to_thread.run_sync(outcome.capture, fn, *args, limiter=limiter)
        nursery.cancel_scope.cancel()
    # If we were cancelled, leaving the nursery raised Cancelled and we never get here.
    assert result is not None
    return result.unwrap()


class TrioPortal:
    """Hands callables from foreign threads to the trio thread, without waiting.

    Create it in trio (it captures the current :class:`trio.lowlevel.TrioToken`), give it to
    the foreign thread, and call :meth:`call_soon` there. Calls made after trio has finished are
    dropped silently: the program is shutting down and nobody is left to receive them.
    """

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        """Schedule ``fn(*args)`` in the trio thread. Returns False if trio has finished."""
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True


class ThreadWorker:
    """One dedicated OS thread that runs submitted calls in order.

    Start it inside a nursery; it stops (and the nursery waits for the thread) when that nursery
    is cancelled or when :meth:`stop` is called::

        worker = ThreadWorker("kafka-consumer")
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            records = await worker.call(consumer.poll, 100)
            nursery.cancel_scope.cancel()

    Args:
        name: the thread's name (shown in tracebacks and ``threading.enumerate()``).
        idle: optional callable run on the thread whenever no call is queued, e.g. one step of a
            network loop. It must return within about *idle_interval* seconds, since queued
            calls wait for it.
        idle_interval: how long the thread waits for a call before running *idle* again.
        on_exit: optional callable run on the thread just before it exits (clean-up that must
            happen on the owning thread, such as closing a non-thread-safe client).
    """

    def __init__(
        self,
        name: str,
        *,
        idle: Callable[[], object] | None = None,
        idle_interval: float = 0.05,
        on_exit: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._idle = idle
        self._idle_interval = idle_interval
        self._on_exit = on_exit
        self._queue: queue.SimpleQueue[Callable[[], object] | object] = queue.SimpleQueue()
        self._running = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The worker's thread while it runs, else None."""
        return self._thread

    def in_worker_thread(self) -> bool:
        """True when called on the worker's own thread."""
        return self._thread is threading.current_thread()

    async def run(self, *, task_status: trio.TaskStatus[ThreadWorker] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run the thread until :meth:`stop` or cancellation; use with ``nursery.start``."""
        if self._running or self._stopped:
            raise RuntimeError(f"{self.name}: a ThreadWorker runs once")
        self._running = True

        async def stop_on_cancel() -> None:
            try:
                await trio.sleep_forever()
            finally:
                self.stop()

        def main() -> None:
            self._thread = threading.current_thread()
            self._main()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_cancel)
                # Calls queued from now on run as soon as the thread is up.
                task_status.started(self)
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(main, thread_name=self.name)
                nursery.cancel_scope.cancel()
        finally:
            self._running = False
            self._stopped = True
            self._thread = None
            self._drain()

    def _main(self) -> None:
        get = self._queue.get
        idle = self._idle
        try:
            while True:
                if idle is None:
                    job = get()
                else:
                    try:
                        job = get(timeout=self._idle_interval)
                    except queue.Empty:
                        idle()
                        continue
                if job is _STOP:
                    return
                assert callable(job)
                job()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _drain(self) -> None:
        # Calls queued after the thread stopped: fail them so their callers wake up.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                assert callable(job)
                job()

    def stop(self) -> None:
        """Ask the thread to exit after the calls already queued (safe from any thread)."""
        self._queue.put(_STOP)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the thread without waiting; exceptions are lost. Thread-safe."""
        if self._stopped:
            raise trio.ClosedResourceError(f"{self.name}: the worker thread has stopped")
        self._queue.put(lambda: fn(*args))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and return its result (or raise its error).

        If the caller is cancelled, the call still runs when its turn comes (it may already be
        running), and its result is dropped.

        Raises:
            trio.ClosedResourceError: the worker has stopped (or stops before running the call).
        """
        if self._stopped or not self._running:
            raise trio.ClosedResourceError(f"{self.name}: the worker thread is not running")
        portal = TrioPortal()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def finish(result: outcome.Outcome[T]) -> None:
            box.append(result)
            done.set()

        def job() -> None:
            if self._thread is not threading.current_thread():
                result: outcome.Outcome[T] = outcome.Error(
                    trio.ClosedResourceError(f"{self.name}: the worker thread stopped")
                )
            else:
                result = outcome.capture(fn, *args)
            portal.call_soon(finish, result)

        self._queue.put(job)
        await done.wait()
        return box[0].unwrap()
