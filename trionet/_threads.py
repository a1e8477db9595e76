"""The thread bridge: the only module in trionet that crosses between trio and OS threads.

Blocking libraries (paho-mqtt, kafka-python, smtplib, imaplib) run on threads; trio code talks to
them through three tools, each of which keeps every thread inside the nursery or call that
started it:

* :func:`run_blocking` runs one blocking call on a worker thread and waits for it. If the caller
  is cancelled, an ``on_cancel`` callback (for example: shut the socket down) makes the call
  return promptly; the thread is always waited for, never abandoned.
* :class:`ThreadWorker` is one dedicated thread that runs submitted calls in order, for
  libraries that are not thread-safe (a kafka-python consumer): the object is used by its
  thread, one call at a time. (The Kafka consumer also decodes records already fetched on the
  trio thread, while nothing is submitted to its worker: see
  ``trionet.kafka._kafka_python_consumer``.) It may run an *idle* function between calls. It
  lives in a nursery: ``await nursery.start(worker.run)``; cancelling that nursery stops the
  thread and waits for it.
* :class:`TrioPortal` lets a foreign thread hand a plain callable to trio
  (``TrioToken.run_sync_soon``: no thread hop back and forth per message, ≈8 µs), typically a
  memory channel's ``send_nowait``; :meth:`TrioPortal.call` does the same from any thread,
  calling at once when already in trio.
* :func:`run_abandoning` is :func:`run_blocking`'s explicit opt-out: a cancelled caller returns
  at once and the thread finishes unobserved (only for public APIs that promise exactly that).
* :class:`ThreadLock` guards state shared between the trio thread and worker threads;
  :func:`in_main_thread` tells whether signal handlers may be installed.
* :class:`LoopThread` is one thread running a network library's select loop, which trio wakes
  when it queues a call; in *shared* mode the trio thread may also run a short call itself while
  the loop waits on its sockets (:meth:`LoopThread.try_call`).
* :class:`Mailbox` carries batches from a foreign thread to one trio task, which one byte on a
  socket pair wakes.
* :class:`Handoff` is a batch one thread gathers while another may take it early, with a count
  of what was handed over, under one lock (a kafka-python consumer's polls and its rebalances).
* :class:`Guarded` is a value two threads update, each read-modify-write under one lock.
* :class:`CrossThreadFlag` is a hint one thread raises and another reads without a lock (trio
  asks paho's network thread to stop reading); :class:`TransitWindow` bounds how far a producer
  thread runs ahead of the trio side that consumes what it hands over.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import outcome
import trio

__all__ = ["Guarded", "Handoff", "LoopThread", "Mailbox", "ThreadWorker", "TrioPortal",
           "run_blocking"]

T = TypeVar("T")

_STOP: Final = object()


async def run_blocking(
    fn: Callable[..., T],
    *args: Any,
    on_cancel: Callable[[], None] | None = None,
    limiter: trio.CapacityLimiter | None = None,
    grace: float = 0.0,
    on_discard: Callable[[T], object] | None = None,
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
        grace: seconds that a cancelled ``fn`` may still run to its end before *on_cancel* is
            called (0: call it at once). For a short exchange that should not be cut in the
            middle, e.g. one command and its reply, so that the connection stays in step; the
            caller then learns of the cancellation only when ``fn`` has returned or the grace
            has run out, and :class:`trio.Cancelled` is raised either way.
        on_discard: called (on a worker thread, shielded) with what ``fn`` returned when a
            cancellation discards it: ``fn`` may have finished despite *on_cancel*, or just
            before the cancellation, and what it built (a client with sockets and threads) must
            still be closed.
    """
    if on_cancel is None:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    result: outcome.Outcome[T] | None = None
    callback = on_cancel
    finished = trio.Event()

    async def watch_for_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if result is None and grace > 0:
                with trio.move_on_after(grace) as waiting:
                    waiting.shield = True
                    await finished.wait()
            if result is None:
                callback()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_for_cancel)
            with trio.CancelScope(shield=True):
                result = await trio.to_thread.run_sync(
                    outcome.capture, fn, *args, limiter=limiter
                )
            finished.set()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if on_discard is not None and isinstance(result, outcome.Value):
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(on_discard, result.value)
        # The watcher's Cancelled arrives wrapped in the nursery's group; callers must see the
        # bare trio.Cancelled, as from any other checkpoint.
        cancelled, rest = group.split(trio.Cancelled)
        if rest is None and cancelled is not None:
            raise _first_leaf(cancelled) from None
        raise
    # If we were cancelled, we left through the except clause and never get here.
    assert result is not None
    return result.unwrap()


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


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

    def call(self, fn: Callable[..., object], *args: Any) -> bool:
        """Call ``fn(*args)`` in the trio thread, from any thread.

        From the portal's own trio run, the call happens now (before this returns); from any
        other thread it is scheduled as by :meth:`call_soon`. Returns False, without calling,
        if trio has finished.
        """
        try:
            here = trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:  # not in any trio run
            here = False
        if here:
            fn(*args)
            return True
        return self.call_soon(fn, *args)


async def _run_owned_thread(
    name: str,
    main: Callable[[], object],
    stop: Callable[[], object],
    task_status: trio.TaskStatus[Any],
    started: object,
) -> None:
    """Run ``main`` on a new thread named *name* until it returns, reporting *started* first.

    The thread is never abandoned: if the caller is cancelled, ``stop()`` asks ``main`` to
    return, and this waits for it; then Cancelled propagates.
    """

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_cancel)
        task_status.started(started)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(main, thread_name=name)
        nursery.cancel_scope.cancel()


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

        def main() -> None:
            self._thread = threading.current_thread()
            self._main()

        try:
            # Calls queued from the moment it reports started run as soon as the thread is up.
            await _run_owned_thread(self.name, main, self.stop, task_status, self)
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


__all__ += ["SocketInterrupter"]

_SockT = TypeVar("_SockT")


class SocketInterrupter:
    """Lets trio interrupt a blocking socket call that runs on a worker thread.

    A blocking client (smtplib, imaplib) running under :func:`run_blocking` tells the interrupter
    which socket it is using (:meth:`attach`, or :meth:`replace` when a TLS wrap swaps the socket
    object); pass :meth:`interrupt` as *on_cancel*. Interrupting shuts a connected socket down in
    both directions, so a ``recv()``, ``sendall()`` or TLS handshake blocked on it returns at once
    with an error. (Connect the socket before attaching it, e.g. from trio: a socket that is not
    connected yet cannot be shut down.) The state is sticky: once interrupted, every later
    :meth:`attach` or :meth:`replace` fails, so a call that was about to start blocking on a new
    socket cannot miss the interruption. The connection is unusable afterwards; make a new
    interrupter for the next one.

    All methods are thread-safe and never block for long (the lock only covers non-blocking work).
    """

    __slots__ = ("_interrupted", "_lock", "_sock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Any = None
        self._interrupted = False

    @property
    def interrupted(self) -> bool:
        """Whether :meth:`interrupt` has been called."""
        return self._interrupted

    def attach(self, sock: Any) -> None:
        """Make ``sock`` the socket that :meth:`interrupt` shuts down.

        Raises:
            InterruptedError: :meth:`interrupt` was already called; ``sock`` is left untouched
                (the caller still owns it and should close it).
        """
        with self._lock:
            if self._interrupted:
                raise InterruptedError("the blocking call was interrupted (cancelled)")
            self._sock = sock

    def replace(self, make: Callable[[], _SockT]) -> _SockT:
        """Call ``make()`` (non-blocking, e.g. an ``SSLContext.wrap_socket`` with
        ``do_handshake_on_connect=False``) and attach its result, atomically with respect to
        :meth:`interrupt`.

        Raises:
            InterruptedError: :meth:`interrupt` was already called; ``make`` is not called.
        """
        with self._lock:
            if self._interrupted:
                raise InterruptedError("the blocking call was interrupted (cancelled)")
            sock = make()
            self._sock = sock
            return sock

    def interrupt(self) -> None:
        """Shut the attached socket down (if any) and refuse every later attach. Idempotent."""
        import contextlib
        import socket

        with self._lock:
            self._interrupted = True
            sock = self._sock
            if sock is None:
                return
            # not connected yet, already closed, or the peer is gone: nothing to interrupt
            with contextlib.suppress(OSError):
                # The plain socket method, also for an ssl.SSLSocket: SSLSocket.shutdown would
                # also drop its SSL object, which another thread is using right now.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


__all__ += ["LoopThread"]


class LoopThread:
    """One dedicated OS thread that runs a *step* function over and over, plus calls queued from
    trio in between, and that trio can wake while the step waits on its sockets.

    It is made for a blocking network library driven by a select loop (paho-mqtt): the step
    function does one round of network work and waits for its sockets with :meth:`wait`, which
    returns early as soon as a call is queued with :meth:`submit` or :meth:`call`, or when the
    thread is asked to stop. Everything the library does then happens on this one thread, so the
    library needs no locking, and queued calls reach it without a polling delay.

    Waking costs at most one byte written to a socket pair per round of the loop, however many
    calls are queued in that round (calls queued while a wake-up is still pending write nothing).

    Start it inside a nursery (``await nursery.start(loop.run)``); it stops, and the nursery waits
    for the thread, when that nursery is cancelled or :meth:`stop` is called::

        def step() -> None:
            readable, writable = loop.wait([sock.fileno()], [], 1.0)
            ...

        loop = LoopThread("mqtt-network", step)
        async with trio.open_nursery() as nursery:
            await nursery.start(loop.run)
            loop.submit(print, "runs on the loop thread")
            nursery.cancel_scope.cancel()

    Shared mode (``shared=True``): the thread holds a lock whenever it runs the step, a queued
    call or *on_exit*, and lets go of it only inside :meth:`wait`, while it waits for its
    sockets. :meth:`try_call` uses that window: when the lock is free and every call queued
    earlier has run, the calling thread (trio's) runs a call itself at once, instead of waking
    the loop thread and waiting for the GIL to pass over. The library is still only ever used by
    the thread holding the lock, one at a time. No lock order can deadlock: :meth:`try_call`
    only *tries* the lock, and neither side waits for the other while holding it (hand results
    back without waiting: :class:`Mailbox`, :class:`TrioPortal`). A call made this way never
    overtakes one queued before it, so order is kept. Only calls that never block belong there.

    Args:
        name: the thread's name (shown in tracebacks and ``threading.enumerate()``).
        step: called on the thread in a loop until the thread stops; it should block only in
            :meth:`wait`. An exception it raises stops the thread and is re-raised by :meth:`run`.
        on_exit: optional callable run on the thread just before it exits.
        shared: allow :meth:`try_call` (see above).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        on_exit: Callable[[], object] | None = None,
        shared: bool = False,
    ) -> None:
        import collections

        self.name = name
        self._step = step
        self._on_exit = on_exit
        self._jobs: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._running = False
        self._stopped = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake_r: Any = None
        self._wake_w: Any = None
        self._wake_pending = False
        self._poll: Any = None
        self._registered: dict[int, int] = {}
        # Shared mode: held by whoever runs library code (see the class docstring). _live and
        # _busy are written under it only.
        self._lock = threading.Lock() if shared else None
        self._live = False  # the thread runs the loop (from its start until on_exit)
        self._busy = False  # a queued call is running (it may wait() and so free the lock)

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread while it runs, else None."""
        return self._thread

    @property
    def running(self) -> bool:
        """True from :meth:`run` until the thread has stopped."""
        return self._running and not self._stopped

    def in_loop_thread(self) -> bool:
        """True when called on the loop's own thread."""
        return self._thread is threading.current_thread()

    async def run(self, *, task_status: trio.TaskStatus[LoopThread] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run the thread until :meth:`stop` or cancellation; use with ``nursery.start``."""
        import socket

        if self._running or self._stopped:
            raise RuntimeError(f"{self.name}: a LoopThread runs once")
        self._running = True
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

        def main() -> None:
            self._thread = threading.current_thread()
            self._main()

        try:
            await _run_owned_thread(self.name, main, self.stop, task_status, self)
        finally:
            self._stopped = True
            self._thread = None
            self._jobs.clear()
            self._wake_r.close()
            self._wake_w.close()

    def _main(self) -> None:
        jobs = self._jobs
        step = self._step
        lock = self._lock
        if lock is not None:
            lock.acquire()
        self._live = True
        try:
            while True:
                while jobs:
                    fn, args = jobs.popleft()
                    self._busy = True
                    try:
                        fn(*args)
                    finally:
                        self._busy = False
                if self._stopping:
                    break
                step()
        finally:
            self._live = False
            try:
                if self._on_exit is not None:
                    self._on_exit()
            finally:
                if lock is not None:
                    lock.release()

    def _wake(self) -> None:
        if not self._wake_pending and self._wake_w is not None:
            self._wake_pending = True
            try:
                self._wake_w.send(b"\0")
            except OSError:  # buffer full: a wake-up is pending anyway; closed: the loop is over
                return

    def stop(self) -> None:
        """Ask the thread to exit after the step it is running (safe from any thread)."""
        self._stopping = True
        self._wake_pending = False
        self._wake()

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the loop thread and wake it; do not wait. Thread-safe.

        Calls run in the order they were submitted, between two steps. An exception raised by
        the call stops the thread (and :meth:`run` re-raises it), so submit only calls that
        handle their own errors, or use :meth:`call`.

        Raises:
            trio.ClosedResourceError: the loop has stopped.
        """
        if self._stopped or self._stopping:
            raise trio.ClosedResourceError(f"{self.name}: the loop thread has stopped")
        self._jobs.append((fn, args))
        self._wake()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop thread and return its result (or raise its error).

        If the caller is cancelled, the call still runs when its turn comes and its result is
        dropped.

        Raises:
            trio.ClosedResourceError: the loop is not running (or stops before the call runs).
        """
        if not self.running or self._stopping:
            raise trio.ClosedResourceError(f"{self.name}: the loop thread is not running")
        portal = TrioPortal()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def finish(result: outcome.Outcome[T]) -> None:
            box.append(result)
            done.set()

        def job() -> None:
            portal.call_soon(finish, outcome.capture(fn, *args))

        self.submit(job)
        await done.wait()
        return box[0].unwrap()

    def try_call(self, fn: Callable[..., object], *args: Any) -> bool:
        """Shared mode: run ``fn(*args)`` on the calling thread, now, if the loop thread is
        waiting on its sockets and every call queued before has run; False if it is busy (then
        :meth:`submit` the call instead). An exception from *fn* propagates (nothing ran then,
        as far as the loop is concerned).

        Raises:
            RuntimeError: the loop was not made with ``shared=True``.
        """
        lock = self._lock
        if lock is None:
            raise RuntimeError(f"{self.name}: try_call needs a LoopThread(shared=True)")
        if not lock.acquire(blocking=False):
            return False
        try:
            if not self._live or self._busy or self._jobs or self._stopping:
                return False
            fn(*args)
            return True
        finally:
            lock.release()

    def wait(self, readable: list[int] | tuple[int, ...], writable: list[int] | tuple[int, ...],
             timeout: float | None) -> tuple[list[int], list[int]]:
        """Wait (on the loop thread) until a file descriptor is ready, a call is queued, the
        loop is asked to stop, or *timeout* seconds (None: no limit) have passed.

        Returns:
            ``(readable_fds, writable_fds)``: the descriptors that are ready. A descriptor with
            an error or hang-up condition is reported in both lists, so that the caller's next
            read or write discovers the error.
        """
        import select

        if self._jobs or self._stopping:
            timeout = 0.0
        poll = self._poll
        if poll is None:
            poll = self._poll = select.poll()
            poll.register(self._wake_r.fileno(), select.POLLIN)
        wanted: dict[int, int] = {}
        for fd in readable:
            wanted[fd] = select.POLLIN
        for fd in writable:
            wanted[fd] = wanted.get(fd, 0) | select.POLLOUT
        registered = self._registered
        if wanted != registered:
            for fd in registered:
                if fd not in wanted:
                    poll.unregister(fd)
            for fd, mask in wanted.items():
                if registered.get(fd) != mask:
                    poll.register(fd, mask)  # register() also modifies an existing entry
            self._registered = wanted
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        lock = self._lock
        if lock is None:
            ready = poll.poll(ms)
        else:
            lock.release()  # the only time the thread lets go of the library: while it waits
            try:
                ready = poll.poll(ms)
            finally:
                lock.acquire()
        wake_fd = self._wake_r.fileno()
        out_r: list[int] = []
        out_w: list[int] = []
        for fd, events in ready:
            if fd == wake_fd:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                # Cleared only after draining: a submit() that saw True put its call in the queue
                # before we got here, so the loop runs it; one that sees False writes a new byte.
                self._wake_pending = False
                continue
            if events & (select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL):
                out_r.append(fd)
            if events & (select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL):
                out_w.append(fd)
        return out_r, out_w


class Mailbox(Generic[T]):
    """Batches put from any thread, delivered in order to ``deliver(batch)`` in one trio task.

    :meth:`put` never blocks: it appends the batch and, unless a wake-up is already pending,
    writes one byte to a socket pair that the :meth:`serve` task waits on with
    ``trio.lowlevel.wait_readable``. That wakes the task directly (cheaper than
    ``TrioToken.run_sync_soon``, whose callbacks run one scheduling round later), and batches
    put before the task has run share its wake-up. When :meth:`serve` ends (cancelled), it
    delivers what is left; batches put after that wait for :meth:`deliver_pending` (call it once
    the sending thread has stopped, so that nothing it said is lost).

    Use: ``await nursery.start(mailbox.serve)``, then give :meth:`put` to the foreign thread.
    """

    __slots__ = ("_batches", "_deliver", "_signal_r", "_signal_w", "_signalled")

    def __init__(self, deliver: Callable[[T], object]) -> None:
        import collections

        self._deliver = deliver
        self._batches: collections.deque[T] = collections.deque()
        self._signalled = False
        self._signal_r: Any = None
        self._signal_w: Any = None

    def put(self, batch: T) -> None:
        """Hand *batch* to trio without waiting (any thread)."""
        self._batches.append(batch)
        if not self._signalled:
            signal = self._signal_w
            if signal is not None:  # (before serve() starts, it delivers what it finds)
                self._signalled = True
                # OSError: full (a wake-up is pending anyway), or closed (serve() has ended)
                with contextlib.suppress(OSError):
                    signal.send(b"\0")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Deliver batches as they come, until cancelled; then deliver the rest."""
        import socket

        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        signal = self._signal_r
        try:
            task_status.started()
            self.deliver_pending()  # put before the socket pair existed
            while True:
                await trio.lowlevel.wait_readable(signal)
                with contextlib.suppress(OSError):
                    signal.recv(4096)
                # Cleared before taking the batches: a batch put from now on sends a new byte.
                self._signalled = False
                self.deliver_pending()
        finally:
            self._signal_w.close()
            self._signal_w = None
            signal.close()
            self.deliver_pending()

    def deliver_pending(self) -> None:
        """Deliver every batch put so far (trio thread)."""
        batches = self._batches
        deliver = self._deliver
        while batches:
            deliver(batches.popleft())


__all__ += ["ThreadLock", "in_main_thread", "run_abandoning"]


async def run_abandoning(
    fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None
) -> T:
    """Run ``fn(*args)`` on a worker thread; if the caller is cancelled, abandon the thread.

    Unlike :func:`run_blocking`, a cancelled caller gets :class:`trio.Cancelled` at once and the
    thread keeps running on its own; whatever ``fn`` returns or raises then is discarded. This
    breaks the rule that no thread outlives its caller, so it exists only for public APIs that
    offer it explicitly (``trionet.aproto.run_sync_task(abandon_on_cancel=True)``).

    Args:
        fn: the blocking callable.
        *args: its positional arguments.
        limiter: a :class:`trio.CapacityLimiter` bounding the number of threads (trio's default
            limiter if None).
    """
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=limiter)


def in_main_thread() -> bool:
    """True in the interpreter's main thread (the only one where signal handlers can be set)."""
    return threading.current_thread() is threading.main_thread()


class ThreadLock:
    """A mutual-exclusion lock for state that trio code and worker threads both touch.

    ``with lock:`` blocks the calling thread (trio's included) until the lock is free, so
    hold it only around short, non-blocking critical sections (a dict update, one SQLite
    statement on a local file). It is not reentrant.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> ThreadLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    @property
    def locked(self) -> bool:
        """True while some thread holds the lock."""
        return self._lock.locked()


class Handoff(Generic[T]):
    """A batch that one thread gathers and hands over, and that another thread may take early.

    The gathering thread :meth:`open` s a batch, :meth:`add` s to it, and :meth:`close` s it
    (taking what is left). Meanwhile another thread may :meth:`steal` what has been gathered so
    far (the batch stays open, empty). :attr:`handed` counts every item taken either way (and
    those :meth:`count` ed for batches handed over directly), so that a reader on a third thread
    can tell how many items are on their way. Every step is one short critical section.

    Used by the kafka-python consumer engine: its thread gathers several polls into one hand-off
    to trio, and a rebalance on kafka-python's I/O thread takes the records gathered so far to
    trio before its listener runs.
    """

    __slots__ = ("_items", "_lock", "handed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[T] | None = None
        #: Items taken so far (by :meth:`close`, :meth:`steal` or :meth:`count`).
        self.handed = 0

    def open(self, items: list[T]) -> None:
        """Start a batch with *items* (the list is kept, not copied)."""
        with self._lock:
            self._items = items

    def add(self, items: list[T]) -> None:
        """Add *items* to the open batch."""
        with self._lock:
            if self._items is None:
                self._items = list(items)
            else:
                self._items.extend(items)

    def close(self) -> list[T]:
        """End the batch: what is left of it (counted as handed over)."""
        with self._lock:
            items, self._items = self._items or [], None
            self.handed += len(items)
        return items

    def steal(self) -> list[T]:
        """Take what the open batch holds now (counted as handed over); it stays open."""
        with self._lock:
            items = self._items
            if not items:
                return []
            self._items = []
            self.handed += len(items)
        return items

    def count(self, n: int) -> None:
        """Count *n* items handed over without a batch."""
        with self._lock:
            self.handed += n


class Guarded(Generic[T]):
    """A value shared by threads: every read-modify-write runs under one lock.

    :meth:`update` calls ``fn(value)``, which returns ``(new value, result)``, with the lock
    held, and returns the result: the change and what the caller learns from it are one atomic
    step. Keep *fn* short and non-blocking. (kafka-python's client trap: the constructor's
    thread records the client it built while trio may abort it.)
    """

    __slots__ = ("_lock", "_value")

    def __init__(self, value: T) -> None:
        self._lock = threading.Lock()
        self._value = value

    @property
    def value(self) -> T:
        """The current value (a plain read)."""
        return self._value

    def update(self, fn: Callable[[T], tuple[T, Any]]) -> Any:
        """Replace the value by ``fn(value)[0]`` atomically; return ``fn(value)[1]``."""
        with self._lock:
            self._value, result = fn(self._value)
        return result


__all__ += ["CrossThreadFlag", "TransitWindow"]


class CrossThreadFlag:
    """A boolean that one thread sets or clears and another thread reads, without a lock.

    For flags that steer a loop on another thread (trio tells paho's network thread "stop
    reading, my buffers are full"): a store or a load of one attribute is atomic, so the
    reader sees either the old or the new value, never a torn one. It may see the old value
    for one more round of its loop, so the protocol around a flag must tolerate that: the
    writer wakes the reader after a change that matters (:meth:`LoopThread.submit` of a no-op),
    and the reader looks at the flag again each time round. Anything that needs more than that
    (two values changed together, a decision both threads must agree on) needs a lock
    (:class:`ThreadLock`) or a hand-off (:class:`Mailbox`) instead.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bool = False) -> None:
        self._value = value

    def set(self) -> None:
        """Raise the flag (any thread)."""
        self._value = True

    def clear(self) -> None:
        """Lower the flag (any thread)."""
        self._value = False

    def assign(self, value: bool) -> None:
        """Set the flag to *value* (any thread)."""
        self._value = value

    def is_set(self) -> bool:
        """The flag's value as last written by any thread."""
        return self._value

    def __bool__(self) -> bool:
        return self._value

    def __repr__(self) -> str:
        return f"CrossThreadFlag({self._value})"


class TransitWindow:
    """Bounds how many items a producer thread has handed over that the consumer has not taken.

    The producer (a network thread) calls :meth:`sent` for each item it hands over and asks
    :meth:`full` before it produces more; the consumer (the trio thread) calls :meth:`taken`
    once it has dealt with items, then :meth:`take_waiting` to learn whether the producer
    stopped at the limit and must be woken. Each counter has one writer, so no lock is needed:

    * :meth:`full` raises the *waiting* flag first and then looks at the counters again, so
      either the consumer, taking items after that, sees the flag (and wakes the producer), or
      it took them before the second look, which then lets the producer go on. No wake-up is
      lost between the two threads.
    * A stale read only errs on the safe side: the producer may stop one item early, or run one
      round late, never run on unbounded.

    Args:
        limit: items that may be in transit at once (at least 1).
    """

    __slots__ = ("_sent", "_taken", "_waiting", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a TransitWindow's limit must be at least 1")
        #: items that may be in transit at once (set it before the producer starts)
        self.limit = limit
        self._sent = 0  # written by the producer only
        self._taken = 0  # written by the consumer only
        self._waiting = CrossThreadFlag()

    @property
    def in_transit(self) -> int:
        """Items handed over and not taken yet (a snapshot)."""
        return self._sent - self._taken

    def sent(self, count: int = 1) -> None:
        """Producer: *count* more items were handed over."""
        self._sent += count

    def full(self) -> bool:
        """Producer: whether to stop producing until the consumer wakes it."""
        if self._sent - self._taken < self.limit:
            return False
        self._waiting.set()  # first the flag, then the second look (see the class docstring)
        return self._sent - self._taken >= self.limit

    def taken(self, count: int = 1) -> None:
        """Consumer: *count* items were dealt with."""
        self._taken += count

    def take_waiting(self) -> bool:
        """Consumer: True (once) if the producer stopped at the limit since the last call: wake
        it, it looks at the window again."""
        if not self._waiting.is_set():
            return False
        self._waiting.clear()
        return True


__all__ += ["RepeatingThread", "ServingWait"]


class RepeatingThread:
    """One OS thread that calls ``step()`` over and over, from :meth:`start` until :meth:`join`.

    For a library object that needs a thread of its own to serve its callbacks (confluent-kafka's
    producer runs its delivery callbacks inside ``poll()``) when its owner has no nursery: the
    owner starts the thread right after building the object and joins it (shielded) when it
    closes the object, so the thread never outlives the object's ``async with``::

        poller = RepeatingThread("kafka-producer-poll", lambda: producer.poll(0.1))
        poller.start()
        ...
        await poller.join()   # asks the thread to stop, waits for it, re-raises its error

    ``step`` must return within about a second: it is what bounds :meth:`join`. An exception
    from ``step`` ends the thread; :meth:`join` raises it. The thread comes from trio's thread
    cache (``trio.lowlevel.start_thread_soon``), named *name* while it runs.
    """

    def __init__(self, name: str, step: Callable[[], object]) -> None:
        self.name = name
        self._step: Callable[[], object] | None = step
        self._stopping = False
        self._done: trio.Event | None = None
        self._result: outcome.Outcome[None] | None = None

    @property
    def running(self) -> bool:
        """Started and not finished yet."""
        return self._done is not None and not self._done.is_set()

    def start(self) -> None:
        """Start the thread (trio thread; once)."""
        if self._done is not None:
            raise RuntimeError(f"{self.name}: a RepeatingThread runs once")
        done = self._done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def finished(result: outcome.Outcome[None]) -> None:  # on the thread, as it ends
            self._result = result
            token.run_sync_soon(done.set)

        trio.lowlevel.start_thread_soon(self._main, finished, name=self.name)

    def _main(self) -> None:
        step = self._step
        assert step is not None
        while not self._stopping:
            step()

    def stop(self) -> None:
        """Ask the thread to end after its current step (safe from any thread)."""
        self._stopping = True

    async def join(self) -> None:
        """Stop the thread and wait until it has ended (at once if it never started).

        Raises:
            Exception: whatever ``step`` raised.
        """
        self.stop()
        if self._done is None:
            await trio.lowlevel.checkpoint()
            return
        await self._done.wait()
        self._step = None  # what it refers to (a library client) may be freed now
        if self._result is not None:
            self._result.unwrap()


class ServingWait:
    """A foreign (non-trio) thread that waits until trio is done with something and meanwhile
    runs the calls trio sends it.

    For a library callback that must block its own thread until trio has acted, while trio's
    code needs that very thread (a Kafka rebalance callback: librdkafka expects a commit made
    for the rebalance, or a look at the assignment, on the thread that runs the callback). The
    callback calls :meth:`serve`; trio-side code sends calls with :meth:`submit` and ends the
    wait with :meth:`finish`. Never serve on the trio thread.
    """

    __slots__ = ("_finished", "_queue")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object] | object] = queue.SimpleQueue()
        self._finished = False

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called."""
        return self._finished

    def submit(self, fn: Callable[[], object]) -> None:
        """Have the waiting thread run ``fn()`` (any thread; exceptions are ``fn``'s to catch).
        A call submitted after :meth:`finish` runs on the caller's thread instead."""
        if self._finished:
            fn()
        else:
            self._queue.put(fn)

    def finish(self) -> None:
        """End the wait (any thread), after the calls already submitted."""
        self._finished = True
        self._queue.put(_STOP)

    def serve(self, timeout: float) -> bool:
        """Run submitted calls on this (foreign) thread until :meth:`finish` or *timeout*
        seconds; whether it finished. Calls still queued at a timeout run before returning."""
        deadline = time.monotonic() + timeout
        get = self._queue.get
        while True:
            try:
                job = get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._finished = True  # later calls run on their callers' threads
                while True:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        return False
                    if job is not _STOP:
                        assert callable(job)
                        job()
            if job is _STOP:
                return True
            assert callable(job)
            job()
