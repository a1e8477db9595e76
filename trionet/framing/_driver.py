"""The byte driver under every framed protocol: reads and writes one trio stream, fast.

:class:`StreamDriver` owns the I/O that :class:`~trionet.framing.FramedStream`, the
request-reply :class:`~trionet.channel.Channel` and the AsyncAProto server share; they keep only
their protocol logic (what the bytes mean) and call it for the bytes themselves.

Reading
    :meth:`StreamDriver.receive` returns the next chunk. For :class:`trio.SocketStream` (TCP and
    Unix sockets, on POSIX) it reads the socket's file descriptor directly: it waits with
    :func:`trio.lowlevel.wait_readable` first (a reply is rarely there the instant its request
    went out, and a failed read costs a system call), except right after a read that filled
    the buffer, when more is likely waiting. Other streams (TLS, in-memory) go through
    ``receive_some``.

Writing
    Output is a queue of chunks (``bytes`` or ``memoryview``), written with one ``writev`` call
    per batch, never copied into one buffer first. :meth:`~StreamDriver.put` writes at once when
    nothing is queued (one ``write`` system call, no task switch) and queues what the kernel did
    not take; :meth:`~StreamDriver.queue` only queues (a caller batching replies), and
    :meth:`~StreamDriver.flush_queued` writes the queue as far as the kernel takes it. What is
    left is written by a short helper task, the *drainer*, in the owner's nursery, so that a
    cancelled writer never leaves half a frame on the wire. Writers wait (backpressure) above
    :data:`HIGH_WATER` queued bytes until the queue drains below :data:`LOW_WATER`.
    :meth:`~StreamDriver.send_all` is the plain alternative for owners without a nursery: it
    writes everything before returning.

Failures
    A write that fails calls the owner's ``on_error(exc)`` (once the driver is broken, output
    is dropped); a failed read raises to the reader, which decides. The driver never raises
    from :meth:`put`: it returns False instead.
"""

from __future__ import annotations

import os
from typing import Any, Final

import trio

__all__ = ["HIGH_WATER", "LOW_WATER", "RECEIVE_SIZE", "StreamDriver"]

# Just under 128 KiB, not asyncio's 256 KiB: glibc serves allocations of 128 KiB and more
# with mmap, so a 256 KiB read buffer costs an mmap, mremap and munmap (and fresh page faults)
# on every read. 127 KiB still takes a 64 KiB frame and the next one in one read.
RECEIVE_SIZE: Final = 127 * 1024
#: Queued output above which writers wait (backpressure), and below which they resume.
HIGH_WATER: Final = 1024 * 1024
LOW_WATER: Final = 256 * 1024
#: Buffers per writev call (Linux's IOV_MAX is 1024).
_IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16

_FAST_PATH: Final = os.name == "posix"

_TRANSPORT_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _ignore_error(exc: BaseException) -> None:
    """The default ``on_error``."""


class StreamDriver:
    """Reads and writes *stream* for a framed protocol (see the module's description).

    Args:
        stream: the byte stream (not owned: the owner closes it).
        nursery: where the drainer runs; required for :meth:`put` and :meth:`flush_queued`
            when the kernel does not take everything at once (and for every write on streams
            that are not sockets). Owners that only use :meth:`send_all` pass None.
        receive_size: the most bytes one :meth:`receive` returns.
        on_error: called (synchronously) with the exception when a write fails; the owner
            marks itself broken there, typically calling :meth:`stop`.

    Attributes:
        stream: the stream.
        sock: the socket read and written through its file descriptor, or None.
        out: queued output chunks; owners may append to it directly on their hot path if they
            add the length to ``out_bytes`` too.
        out_bytes: bytes queued and not yet taken by the kernel.
        draining: True while the drainer runs (then new output must be queued).
        closed: set by the owner once it closes; a failing drainer then does not close the
            stream itself.
    """

    __slots__ = (
        "_drain_scope",
        "_flushed",
        "_more_to_read",
        "_nursery",
        "_on_error",
        "_receive_size",
        "_space",
        "broken",
        "closed",
        "draining",
        "out",
        "out_bytes",
        "sock",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        nursery: trio.Nursery | None = None,
        *,
        receive_size: int = RECEIVE_SIZE,
        on_error: Any = _ignore_error,
    ) -> None:
        self.stream = stream
        self.sock: trio.socket.SocketType | None = (
            stream.socket if _FAST_PATH and type(stream) is trio.SocketStream else None
        )
        self._nursery = nursery
        self._receive_size = receive_size
        self._on_error = on_error
        self._more_to_read = False
        self.out: list[bytes | memoryview] = []
        self.out_bytes = 0
        self.draining = False
        self._drain_scope: trio.CancelScope | None = None
        # Made when first waited on: an idle connection should cost little memory.
        self._space: trio.lowlevel.ParkingLot | None = None
        self._flushed: trio.lowlevel.ParkingLot | None = None
        self.broken = False
        self.closed = False

    def extra_info(self, name: str, default: Any = None) -> Any:
        """Information about the connection, with asyncio's transport names.

        Known names: ``"peername"``, ``"sockname"``, ``"socket"`` (the trio socket) and, over
        TLS, ``"ssl_object"`` (the :class:`trio.SSLStream`), ``"sslcontext"``, ``"peercert"``,
        ``"cipher"`` and ``"compression"``. Anything else, or anything the stream cannot tell,
        gives *default*.
        """
        ssl_stream: trio.SSLStream[Any] | None = None
        stream: Any = self.stream
        while isinstance(stream, trio.SSLStream):
            if ssl_stream is None:
                ssl_stream = stream
            stream = stream.transport_stream
        sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        try:
            if name == "peername" and sock is not None:
                return sock.getpeername()
            if name == "sockname" and sock is not None:
                return sock.getsockname()
            if name == "socket" and sock is not None:
                return sock
            if ssl_stream is not None:
                if name == "ssl_object":
                    return ssl_stream
                if name == "sslcontext":
                    return ssl_stream.context
                if name == "peercert":
                    return ssl_stream.getpeercert()
                if name == "cipher":
                    return ssl_stream.cipher()
                if name == "compression":
                    return ssl_stream.compression()
        except (OSError, ValueError, trio.NeedHandshakeError):
            return default
        return default

    # -- reading ---------------------------------------------------------------------------

    async def receive(self) -> bytes | bytearray:
        """The next chunk from the peer; ``b""`` at the end of the stream.

        Raises:
            OSError: the socket failed (fd fast path).
            trio.BrokenResourceError, trio.ClosedResourceError: as ``receive_some`` raises
                them (on the fast path, ClosedResourceError when the socket was closed).
        """
        sock = self.sock
        if sock is None:
            return await self.stream.receive_some(self._receive_size)
        size = self._receive_size
        wait = not self._more_to_read
        while True:
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the socket was closed")
            if wait:
                await trio.lowlevel.wait_readable(fd)
            else:
                await trio.lowlevel.checkpoint()  # still let others run between chunks
            if sock.fileno() != fd:
                raise trio.ClosedResourceError("the socket was closed")
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                wait = True
                continue
            self._more_to_read = len(data) == size
            return data

    # -- writing ---------------------------------------------------------------------------

    def put(self, data: bytes, defer: bool = False, more: bool = False) -> bool:
        """Write *data* now, or queue it behind earlier output; False if the socket failed.

        With *defer* (the owner knows more output follows before it blocks), *data* is queued
        and the drainer writes it all in one go as soon as the calling task yields. With *more*
        (other tasks are about to write), *data* goes out at once and a drainer is started so
        that their output queues up behind it. On a write error ``on_error`` is called and the
        socket closed (what ``SocketStream.aclose()`` does, minus its checkpoint).
        """
        if self.out or self.draining:
            self.out.append(data)
            self.out_bytes += len(data)
            return True
        sock = self.sock
        if sock is None or defer:
            self.out.append(data)
            self.out_bytes += len(data)
            self._start_drainer()
            return True
        fd = sock.fileno()
        try:
            if fd < 0:
                raise trio.ClosedResourceError("the socket was closed")
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except (OSError, trio.ClosedResourceError) as exc:
            self._on_error(exc)
            sock.close()
            return False
        if written < len(data):
            rest = memoryview(data)[written:]
            self.out.append(rest)
            self.out_bytes += len(rest)
            self._start_drainer()
        elif more:
            self._start_drainer()
        return True

    def queue(self, data: bytes) -> None:
        """Queue *data* without writing it: the caller calls :meth:`flush_queued` before it
        next blocks (with the drainer running, the drainer writes it)."""
        self.out.append(data)
        self.out_bytes += len(data)

    def flush_queued(self) -> None:
        """Write queued output now, as far as the kernel takes it; a drainer does the rest.

        One ``writev`` per batch, and no helper task when the kernel takes it all.
        """
        if not self.out or self.draining:
            return
        sock = self.sock
        fd = -1 if sock is None or self.broken else sock.fileno()
        if fd >= 0:
            chunks = self.out
            try:
                first, _ = self._writev(fd, chunks, 0)
            except OSError as exc:
                self._on_error(exc)
                return
            del chunks[:first]
            if not chunks:
                if self._flushed:
                    self._flushed.unpark_all()
                return
        self._start_drainer()

    async def wait_for_space(self) -> None:
        """Backpressure: wait until the queued output drains below :data:`LOW_WATER` (or the
        driver stops: the caller checks its own state afterwards)."""
        while self.out_bytes >= LOW_WATER and not self.broken and not self.closed:
            if self._space is None:
                self._space = trio.lowlevel.ParkingLot()
            await self._space.park()

    async def wait_flushed(self) -> None:
        """Wait until queued output has reached the kernel (or the driver stopped)."""
        while (self.out or self.draining) and not self.broken:
            if self._flushed is None:
                self._flushed = trio.lowlevel.ParkingLot()
            await self._flushed.park()

    def stop(self, *, broken: bool = True) -> None:
        """Drop queued output, cancel the drainer and wake every waiting writer."""
        if broken:
            self.broken = True
        self.out.clear()
        self.out_bytes = 0
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        if self._space:
            self._space.unpark_all()
        if self._flushed:
            self._flushed.unpark_all()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of *data* before returning (for owners without a nursery).

        Cancellation in the middle leaves the stream in an unknown state, as with
        ``send_all``. Errors are raised (``on_error`` is not called).
        """
        sock = self.sock
        if sock is None:
            await self.stream.send_all(data)
        else:
            await self._write_through(sock, [data], count=False)

    async def flush(self) -> None:
        """Write all queued output before returning, in ``writev`` batches (for owners that
        queue with :meth:`queue` but have no drainer). Errors are raised, as by
        :meth:`send_all`.
        """
        while self.out:
            chunks = self.out
            self.out = []
            sock = self.sock
            if sock is None:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await self.stream.send_all(data)
                self._wrote(len(data))
                continue
            await self._write_through(sock, chunks)

    async def _write_through(
        self, sock: trio.socket.SocketType, chunks: list[Any], *, count: bool = True
    ) -> None:
        """Write *chunks* from this task, as a checkpoint (as a socket's ``send`` is)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await self._drain_fd(sock, chunks, count=count)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _start_drainer(self) -> None:
        if not self.draining:
            if self._nursery is None:
                raise RuntimeError("this StreamDriver has no nursery to write in")
            self.draining = True
            self._nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        """Helper task: write the queued output, then exit."""
        try:
            with trio.CancelScope() as scope:
                self._drain_scope = scope
                while self.out:
                    chunks = self.out
                    self.out = []
                    if self.sock is not None:
                        await self._drain_fd(self.sock, chunks)
                    else:
                        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                        await self.stream.send_all(data)
                        self._wrote(len(data))
        except _TRANSPORT_ERRORS as exc:
            if not self.closed:
                self._on_error(exc)
                await trio.aclose_forcefully(self.stream)
        finally:
            self._drain_scope = None
            self.draining = False
            if self._flushed:
                self._flushed.unpark_all()

    def _wrote(self, count: int) -> None:
        self.out_bytes = max(0, self.out_bytes - count)
        if self.out_bytes < LOW_WATER and self._space:
            self._space.unpark_all()

    def _writev(
        self, fd: int, chunks: list[Any], first: int, count: bool = True
    ) -> tuple[int, bool]:
        """Write ``chunks[first:]`` with ``writev`` until the kernel stops taking them; return
        the index of the first chunk not fully written and whether the socket's buffer is full.
        A partly written chunk is replaced by its rest. With *count*, the chunks are queued
        output (``out_bytes`` goes down as they are written).
        """
        while first < len(chunks):
            batch = chunks[first : first + _IOV_MAX] if first or len(chunks) > _IOV_MAX else chunks
            try:
                written = os.writev(fd, batch)
            except BlockingIOError:
                return first, True
            if count:
                self._wrote(written)
            for chunk in batch:
                size = len(chunk)
                if written < size:
                    chunks[first] = memoryview(chunk)[written:]
                    return first, True
                written -= size
                first += 1
        return first, False

    async def _drain_fd(
        self, sock: trio.socket.SocketType, chunks: list[Any], *, count: bool = True
    ) -> None:
        first = 0
        while True:
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the socket was closed")
            first, full = self._writev(fd, chunks, first, count)
            if not full:
                return
            await trio.lowlevel.wait_writable(fd)
