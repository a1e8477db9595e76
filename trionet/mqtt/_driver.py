"""Who runs the :class:`~trionet.mqtt._paho.PahoEngine`: a network thread, or trio itself.

``backend="thread"`` (the default): :class:`ThreadDriver`. The engine lives on one
:class:`~trionet._threads.LoopThread` owned by the client's nursery, which reads, keeps the
connection alive and parses; trio submits engine calls to it and receives batches of events
through a socket pair watched by one trio task. A publish or an acknowledgement made while the
thread idles in ``poll`` is written by the trio thread itself, under the engine lock
(:meth:`ThreadDriver.try_direct`), which saves the thread hop on the way out.

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
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import trio

from .._threads import LoopThread, run_blocking
from ._paho import EngineSettings, Event, PahoEngine

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

    The network thread holds :attr:`_lock` whenever it runs engine code, and lets go of it only
    while it waits for its sockets (``poll``). :meth:`try_direct` uses that window: when the
    lock is free and every call queued with :meth:`submit` has run, the trio thread itself
    runs the call (a publish, an acknowledgement) and writes it to the socket at once, instead
    of waking the network thread and waiting for the GIL to pass over. That is what keeps the
    latency of one publish close to raw paho's.

    Why this is safe, although paho is not thread-safe (eclipse-paho/paho.mqtt.python#354,
    #177, #358 are deadlocks between paho's own locks when two threads use one client): the
    engine, and paho with it, is only ever touched by the thread holding :attr:`_lock`, so paho
    never sees two threads at once and its internal locks are never contended. The trio thread
    only *tries* the lock (``acquire(blocking=False)``) and never waits for the network thread
    while holding it, and the network thread never waits for trio while holding it (it hands
    events over through a deque and one non-blocking ``send`` on a socket pair), so no lock
    order can deadlock. Calls are only run directly when nothing submitted earlier is still
    queued, so they never overtake an earlier call (message order is kept). Only calls that
    never block go this way; connecting, disconnecting (a final flush may wait) and everything
    else stay on the network thread.
    """

    def __init__(
        self, name: str, settings: EngineSettings, on_events: Callable[[list[Event]], None]
    ) -> None:
        self._on_events = on_events
        self._batches: deque[list[Event]] = deque()
        self._signalled = False
        self._signal_r: socket.socket | None = None
        self._signal_w: socket.socket | None = None
        self._lock = threading.Lock()
        self._submitted = 0  # calls queued for the network thread (written by trio only)
        self._ran = 0  # of those, calls that have run (written under the lock only)
        self._live = False  # the network thread runs the engine (written under the lock only)
        #: Calls run by :meth:`try_direct` on the trio thread so far.
        self.direct_calls = 0
        self._loop = LoopThread(name, self._step, on_exit=self._exit)
        self.engine = PahoEngine(settings, self._emit, self._wait)

    # -- on the network thread ------------------------------------------------------------------

    def _step(self) -> None:
        with self._lock:
            self._live = True
            self.engine.step()

    def _wait(self, readable: list[int], writable: list[int], timeout: float | None
              ) -> tuple[list[int], list[int]]:
        # the only time the network thread lets go of the engine: while it waits
        self._lock.release()
        try:
            return self._loop.wait(readable, writable, timeout)
        finally:
            self._lock.acquire()

    def _run(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                fn(*args)
            finally:
                self._ran += 1

    def _exit(self) -> None:
        with self._lock:
            self._live = False
            self.engine.shutdown()

    def _emit(self, events: list[Event]) -> None:
        # Hand the batch to trio without waiting (any thread). One byte on the signal socket
        # wakes the delivering task directly (cheaper than TrioToken.run_sync_soon, whose
        # callbacks run one scheduling round later); batches emitted before trio has taken
        # the first one share its wake-up.
        self._batches.append(events)
        if not self._signalled:
            self._signalled = True
            signal = self._signal_w
            if signal is not None:
                with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                    signal.send(b"\0")

    # -- on the trio thread ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver)
                await nursery.start(self._run_loop, nursery.cancel_scope)
                task_status.started()
        finally:
            self._signal_w.close()
            self._signal_w = None
            self._signal_r.close()
            # the thread has exited: hand over what it said last (pending calls that failed)
            self._deliver_batches()

    async def _run_loop(
        self, done: trio.CancelScope, *, task_status: trio.TaskStatus[LoopThread]
    ) -> None:
        try:
            await self._loop.run(task_status=task_status)
        finally:
            done.cancel()  # the thread is gone: stop delivering

    async def _deliver(self) -> None:
        signal = self._signal_r
        assert signal is not None
        while True:
            await trio.lowlevel.wait_readable(signal)
            with contextlib.suppress(OSError):
                signal.recv(4096)
            # cleared before taking the batches: a batch emitted from now on sends a new byte
            self._signalled = False
            self._deliver_batches()

    def _deliver_batches(self) -> None:
        batches = self._batches
        while batches:
            self._on_events(batches.popleft())

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the network thread (raises ClosedResourceError if stopped)."""
        self._loop.submit(self._run, fn, args)
        self._submitted += 1

    def try_direct(self, fn: Callable[..., object], *args: Any) -> bool:
        """Run the non-blocking engine call ``fn(*args)`` on this (the trio) thread, now, if the
        network thread is idle and has nothing queued; False if it is busy (then submit it).

        The call's output is written to the socket before this returns.
        """
        lock = self._lock
        if not lock.acquire(blocking=False):
            return False
        try:
            if not self._live or self._ran != self._submitted:
                return False
            engine = self.engine
            fn(*args)
            self.direct_calls += 1
            engine.flush_output()
            # (also events the network thread collected and has not handed over yet: emitted
            # under the lock, so that batches reach trio in the order they were made)
            events = engine.take_events()
            if events:
                self._emit(events)
            wake = engine.wants_write()
        finally:
            lock.release()
        if wake:  # the socket is full: the network thread must wait for it to drain
            self.wake()
        return True

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
