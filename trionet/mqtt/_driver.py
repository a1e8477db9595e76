"""Who runs the :class:`~trionet.mqtt._paho.PahoEngine`: a network thread, or trio itself.

``backend="thread"`` (the default): :class:`ThreadDriver`. The engine lives on one
:class:`~trionet._threads.LoopThread` owned by the client's nursery, which reads, keeps the
connection alive and parses; trio submits engine calls to it and receives batches of events
through a :class:`~trionet._threads.Mailbox` (a socket pair watched by one trio task). A publish
or an acknowledgement made while the thread idles in ``poll`` is written by the trio thread
itself, under the loop's lock (:meth:`ThreadDriver.try_direct`), which saves the thread hop on
the way out.

``backend="trio"``: :class:`TrioDriver`. No network thread: the engine runs on the trio thread,
driven by three small tasks (reader: ``trio.lowlevel.wait_readable``; writer:
``wait_writable`` when the socket is full; timer: keepalive), and engine calls run inline. Only
the blocking part of connecting (TCP connect, TLS and WebSocket handshakes, bounded by
``connect_timeout``) runs on a worker thread, through :func:`trionet._threads.run_blocking`,
while every other engine call waits its turn (cancelling it shuts the socket down, so a stalled
handshake ends at once). This saves the thread hops of a round trip, so latency is lower
(wake-ups of an idle thread are costly, on a virtual machine above all); paho's parsing then
shares the trio thread with the application.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import trio

from .._threads import LoopThread, Mailbox, run_blocking
from ._events import Event
from ._options import EngineSettings
from ._paho import PahoEngine

__all__ = ["Driver", "ThreadDriver", "TrioDriver"]


class Driver(Protocol):
    """What the client needs from a driver."""

    engine: PahoEngine

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None: ...

    def submit(self, fn: Callable[..., object], *args: Any) -> None: ...

    def try_direct(self, fn: Callable[..., object], *args: Any) -> bool: ...

    async def connect(self, attempt: int, host: str, port: int, first: bool) -> None: ...

    def wake(self) -> None: ...

    def interrupt_connect(self) -> None: ...

    def stop(self) -> None: ...


class ThreadDriver:
    """The engine on its own network thread (see the module docstring).

    The thread is a :class:`~trionet._threads.LoopThread` in shared mode: it holds the loop's
    lock whenever it runs engine code and lets go of it only while it waits for its sockets.
    :meth:`try_direct` uses that window (:meth:`~trionet._threads.LoopThread.try_call`): when
    the thread is idle and every call queued before has run, the trio thread itself runs the
    call (a publish, an acknowledgement) and writes it to the socket at once, instead of waking
    the network thread and waiting for the GIL to pass over. That is what keeps the latency of
    one publish close to raw paho's.

    Why this is safe, although paho is not thread-safe (eclipse-paho/paho.mqtt.python#354,
    #177, #358 are deadlocks between paho's own locks when two threads use one client): the
    engine, and paho with it, is only ever touched by the thread holding the loop's lock, so
    paho never sees two threads at once and its internal locks are never contended. The trio
    thread only *tries* that lock, the network thread hands events over through a
    :class:`~trionet._threads.Mailbox` (no waiting), and neither waits for the other while
    holding the lock, so no lock order can deadlock. Only calls that never block go this way;
    connecting, disconnecting (a final flush may wait) and everything else stay on the network
    thread.
    """

    def __init__(
        self, name: str, settings: EngineSettings, on_events: Callable[[list[Event]], None]
    ) -> None:
        self._events: Mailbox[list[Event]] = Mailbox(on_events)
        #: Calls run by :meth:`try_direct` on the trio thread so far.
        self.direct_calls = 0
        self._loop = LoopThread(name, self._step, on_exit=self._exit, shared=True)
        self.engine = PahoEngine(settings, self._events.put, self._loop.wait)

    # -- on the network thread (holding the loop's lock) ---------------------------------------

    def _step(self) -> None:
        self.engine.step()

    def _exit(self) -> None:
        self.engine.shutdown()

    # -- on the trio thread ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._events.serve)
                await nursery.start(self._run_loop, nursery.cancel_scope)
                task_status.started()
        finally:
            # the thread has exited: hand over what it said last (pending calls that failed)
            self._events.deliver_pending()

    async def _run_loop(
        self, done: trio.CancelScope, *, task_status: trio.TaskStatus[LoopThread]
    ) -> None:
        try:
            await self._loop.run(task_status=task_status)
        finally:
            done.cancel()  # the thread is gone: stop delivering

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the network thread (raises ClosedResourceError if stopped)."""
        self._loop.submit(fn, *args)

    def try_direct(self, fn: Callable[..., object], *args: Any) -> bool:
        """Run the non-blocking engine call ``fn(*args)`` on this (the trio) thread, now, if the
        network thread is idle and has nothing queued; False if it is busy (then submit it).

        The call's output is written to the socket before this returns.
        """
        return self._loop.try_call(self._direct, fn, args)

    def _direct(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        # trio thread, holding the loop's lock
        engine = self.engine
        fn(*args)
        self.direct_calls += 1
        engine.flush_output()
        # (also events the network thread collected and has not handed over yet: put under
        # the lock, so that batches reach trio in the order they were made)
        events = engine.take_events()
        if events:
            self._events.put(events)
        if engine.wants_write():  # the socket is full: the network thread must wait for it
            self.wake()  # (queues a call: never waits for the network thread)

    async def connect(self, attempt: int, host: str, port: int, first: bool) -> None:
        self.submit(self.engine.connect, attempt, host, port, first)
        await trio.lowlevel.checkpoint()

    def wake(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError):  # stopped: nothing to wake
            self.submit(_noop)

    def interrupt_connect(self) -> None:
        # thread-safe: shuts down the socket a handshake on the network thread is blocked on
        self.engine.interrupt_connect()

    def stop(self) -> None:
        self.engine.interrupt_connect()
        self._loop.stop()


class TrioDriver:
    """The engine on the trio thread, driven by trio's I/O waits (see the module docstring)."""

    def __init__(self, settings: EngineSettings, on_events: Callable[[list[Event]], None]) -> None:
        self._on_events = on_events
        self.engine = PahoEngine(
            settings,
            self._deliver,
            on_socket_close=self._socket_closing,
            final_flush_timeout=0.0,
        )
        self._running = False
        self._stopped = False
        self._blocking = False
        self._queued: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._batches: list[list[Event]] = []
        self._dispatching = False
        self._read_wakeup = trio.Event()
        self._write_wakeup = trio.Event()

    # -- events ---------------------------------------------------------------------------------

    def _deliver(self, events: list[Event]) -> None:
        if events:
            self._batches.append(events)
        self._dispatch()

    def _dispatch(self) -> None:
        # Not re-entrant: a handler of one batch may cause more events (an ack, a failure);
        # those are handled by this loop once the current batch is done.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while True:
                if self._batches:
                    batch = self._batches.pop(0)
                else:
                    batch = self.engine.take_events()
                    if not batch:
                        return
                self._on_events(batch)
        finally:
            self._dispatching = False

    def _after(self) -> None:
        """After any engine work: write what is collected, then handle the events."""
        engine = self.engine
        if not self._blocking:
            engine.flush_output()
            if engine.wants_write():
                self._write_wakeup.set()
        self._dispatch()

    def _socket_closing(self, fd: int) -> None:
        # trio must hear about a closing fd before it is closed, so that a task waiting on it
        # wakes up (with ClosedResourceError) instead of waiting on a recycled descriptor.
        # (RuntimeError: a worker thread, while connecting, closes a socket trio never saw)
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(fd)

    # -- driver interface -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        if self._running or self._stopped:
            raise RuntimeError("a TrioDriver runs once")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timer)
                task_status.started()
        finally:
            self._stopped = True
            self.engine.shutdown()
            self._dispatch()

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` now (or right after the connection attempt in progress)."""
        if self._stopped or not self._running:
            raise trio.ClosedResourceError("the MQTT driver is not running")
        if self._blocking:
            self._queued.append((fn, args))
            return
        fn(*args)
        self._after()

    def try_direct(self, fn: Callable[..., object], *args: Any) -> bool:
        """Run ``fn(*args)`` now, unless a connection attempt is in progress (False: submit it).

        The call's output is written to the socket before this returns.
        """
        if self._blocking or self._stopped or not self._running:
            return False
        fn(*args)
        self._after()
        return True

    async def connect(self, attempt: int, host: str, port: int, first: bool) -> None:
        """Connect on a worker thread; engine calls made meanwhile wait and run afterwards."""
        if self._stopped or not self._running:
            raise trio.ClosedResourceError("the MQTT driver is not running")
        self._blocking = True
        try:
            await run_blocking(
                self.engine.connect, attempt, host, port, first,
                on_cancel=self.engine.interrupt_connect,
            )
        finally:
            self._blocking = False
            queued = self._queued
            self._queued = []
            for fn, args in queued:
                fn(*args)
            self._after()
            self.wake()

    def wake(self) -> None:
        self._read_wakeup.set()

    def interrupt_connect(self) -> None:
        self.engine.interrupt_connect()

    def stop(self) -> None:
        """Nothing to do: the tasks end with the client's nursery."""

    # -- the tasks ------------------------------------------------------------------------------

    async def _reader(self) -> None:
        engine = self.engine
        while True:
            fd = None if self._blocking else engine.socket_fd()
            if fd is None or not engine.wants_read():
                await self._read_wakeup.wait()
                self._read_wakeup = trio.Event()
                continue
            if engine.has_buffered_input():
                await trio.lowlevel.checkpoint()
            else:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except (trio.ClosedResourceError, OSError):
                    continue  # closed (notify_closing) while we waited
            if self._blocking or engine.socket_fd() != fd:
                continue
            engine.read_round()
            self._after()

    async def _writer(self) -> None:
        engine = self.engine
        while True:
            await self._write_wakeup.wait()
            self._write_wakeup = trio.Event()
            while not self._blocking and engine.wants_write():
                fd = engine.socket_fd()
                if fd is None:
                    break
                try:
                    await trio.lowlevel.wait_writable(fd)
                except (trio.ClosedResourceError, OSError):
                    break
                if self._blocking or engine.socket_fd() != fd:
                    break
                engine.write_round()
                self._after()

    async def _timer(self) -> None:
        engine = self.engine
        while True:
            await trio.sleep(engine.misc_interval)
            if not self._blocking and engine.socket_fd() is not None:
                engine.misc()
                self._after()


def _noop() -> None:
    pass
