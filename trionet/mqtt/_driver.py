"""Who runs the :class:`~trionet.mqtt._paho.PahoEngine`: a network thread, or trio itself.

``backend="thread"`` (the default): :class:`ThreadDriver`. The engine lives on one
:class:`~trionet._threads.LoopThread` owned by the client's nursery; trio submits engine calls to
it and receives batches of events through ``TrioToken.run_sync_soon``. paho never runs on the
trio thread, so a slow paho call never delays other trio tasks.

``backend="trio"``: :class:`TrioDriver`. No network thread: the engine runs on the trio thread,
driven by three small tasks (reader: ``trio.lowlevel.wait_readable``; writer:
``wait_writable`` when the socket is full; timer: keepalive), and engine calls run inline. Only
the blocking part of connecting (TCP connect, TLS and WebSocket handshakes, bounded by
``connect_timeout``) runs on a worker thread, through :func:`trionet._threads.run_blocking`,
while every other engine call waits its turn (cancelling it shuts the socket down, so a stalled
handshake ends at once). This saves the thread hops of a round trip, so
latency is lower; paho's parsing then shares the trio thread with the application.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import trio

from .._threads import LoopThread, TrioPortal, run_blocking
from ._paho import EngineSettings, Event, PahoEngine

__all__ = ["Driver", "ThreadDriver", "TrioDriver"]


class Driver(Protocol):
    """What the client needs from a driver."""

    engine: PahoEngine

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None: ...

    def submit(self, fn: Callable[..., object], *args: Any) -> None: ...

    async def connect(self, attempt: int, host: str, port: int, first: bool) -> None: ...

    def wake(self) -> None: ...

    def interrupt_connect(self) -> None: ...

    def stop(self) -> None: ...


class ThreadDriver:
    """The engine on its own network thread (see the module docstring)."""

    def __init__(
        self, name: str, settings: EngineSettings, on_events: Callable[[list[Event]], None]
    ) -> None:
        self._on_events = on_events
        self._portal: TrioPortal | None = None
        self._loop = LoopThread(name, self._step, on_exit=self._exit)
        self.engine = PahoEngine(settings, self._emit, self._loop.wait)

    def _step(self) -> None:
        self.engine.step()

    def _exit(self) -> None:
        self.engine.shutdown()

    def _emit(self, events: list[Event]) -> None:
        # on the network thread: hand the batch to trio without waiting
        if self._portal is not None:
            self._portal.call_soon(self._on_events, events)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._portal = TrioPortal()
        await self._loop.run(task_status=task_status)  # type: ignore[arg-type]

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the network thread (raises ClosedResourceError if stopped)."""
        self._loop.submit(fn, *args)

    async def connect(self, attempt: int, host: str, port: int, first: bool) -> None:
        self._loop.submit(self.engine.connect, attempt, host, port, first)
        await trio.lowlevel.checkpoint()

    def wake(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError):  # stopped: nothing to wake
            self._loop.submit(_noop)

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
