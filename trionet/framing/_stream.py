"""The trio driver: a :class:`trio.abc.Stream` seen as a channel of length-prefixed frames."""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from ._driver import StreamDriver
from ._length_prefix import (
    DEFAULT_MAX_FRAME_SIZE,
    ByteOrder,
    LengthPrefixDecoder,
    LengthPrefixEncoder,
)

__all__ = ["FramedStream"]

_DEFAULT_RECEIVE_SIZE = 65536


class _Batch:
    """Frames queued together; written by one ``send_all``."""

    __slots__ = ("done", "error", "frames", "sent")

    def __init__(self, frames: list[bytes] | None = None) -> None:
        self.frames: list[bytes] = [] if frames is None else frames
        self.done = trio.Event()
        self.sent = False
        self.error: BaseException | None = None


class FramedStream(trio.abc.Channel[bytes]):
    """Send and receive length-prefixed frames over any :class:`trio.abc.Stream`.

    It is a :class:`trio.abc.Channel` of ``bytes``: :meth:`send` is :meth:`send_frame`,
    :meth:`receive` is :meth:`receive_frame`, and ``async for frame in framed`` reads until the
    peer closes cleanly.

    It is built on the framing layer's byte driver (the one the Channel and the AsyncAProto
    server use too): over a :class:`trio.SocketStream` it reads and writes the socket's file
    descriptor directly.

    **Concurrent senders are coalesced, not serialised.** A task calling :meth:`send_frame` while
    another task is writing queues its frame and waits; when the write in progress finishes, the
    writer sends everything queued meanwhile in *one* ``send_all``. Each sender returns once its
    own frame has been handed to the stream. Throughput with many outstanding senders is then
    bounded by the socket, not by a lock hand-off per frame.

    Cancellation: a sender cancelled before its frame was queued, or while it was about to
    write it, sends nothing. A sender cancelled while *waiting* behind another writer leaves its
    frame queued: it is still sent, exactly as if the cancel had come just after sending. If the
    writing task is cancelled before any byte of the batch went out, a waiting sender takes over.
    If it is cancelled in the middle of ``send_all``, the stream's state is unknown, so every
    later send raises :class:`trio.BrokenResourceError`.

    Args:
        stream: the byte stream; the FramedStream owns it and closes it in :meth:`aclose`.
        header_size, byteorder, extra_header_size, max_frame_size: the frame format, as in
            :class:`~trionet.framing.LengthPrefixDecoder`; ``max_frame_size`` applies to both
            directions.
        receive_size: the most bytes read at once.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        header_size: int = 4,
        byteorder: ByteOrder = "big",
        extra_header_size: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        receive_size: int = _DEFAULT_RECEIVE_SIZE,
    ) -> None:
        fmt: dict[str, Any] = {
            "header_size": header_size,
            "byteorder": byteorder,
            "extra_header_size": extra_header_size,
            "max_frame_size": max_frame_size,
        }
        self.stream = stream
        self._io = StreamDriver(stream, receive_size=receive_size)
        self.encoder = LengthPrefixEncoder(**fmt)
        self.decoder = LengthPrefixDecoder(**fmt)
        self._received: deque[bytes] = deque()
        self._receiving = False
        self._eof = False
        self._queued = _Batch()
        self._writing = False
        self._send_error: BaseException | None = None
        self._closed = False
        self._eof_sent = False

    # -- sending ---------------------------------------------------------------------------

    async def send_frame(self, payload: bytes | bytearray | memoryview, extra: bytes = b"") -> None:
        """Send one frame; return once it has been handed to the underlying stream.

        Raises:
            FrameTooLarge: the payload exceeds ``max_frame_size`` (nothing was sent).
            trio.ClosedResourceError: this FramedStream was closed.
            trio.BrokenResourceError: the stream failed, now or in an earlier send.
        """
        frame = self.encoder.encode(payload, extra)
        await self._send_encoded(frame)

    async def send_frames(self, payloads: list[bytes], extra: bytes = b"") -> None:
        """Send several frames (each with the same *extra* bytes) in one write.

        Same errors as :meth:`send_frame`; if any payload is too large, nothing is sent.
        """
        encode = self.encoder.encode
        frames = [encode(p, extra) for p in payloads]
        await self._send_encoded(b"".join(frames))

    async def send(self, value: bytes) -> None:
        """Alias of :meth:`send_frame`, for the :class:`trio.abc.SendChannel` interface."""
        await self.send_frame(value)

    async def send_eof(self) -> None:
        """Close the sending direction only: the peer receives every frame sent before, then
        :class:`trio.EndOfChannel`; this side can still receive (half-close, as a TCP
        ``shutdown(SHUT_WR)``). Frames other tasks have queued are written first; later sends
        raise :class:`trio.ClosedResourceError`. Calling it again does nothing.

        Raises:
            TypeError: the stream cannot half-close (it is not a
                :class:`trio.abc.HalfCloseableStream`: TLS streams, for one, cannot).
            trio.ClosedResourceError: this FramedStream was closed.
            trio.BrokenResourceError: the stream failed, now or in an earlier send.
        """
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            raise TypeError(f"a {type(stream).__name__} cannot half-close (send_eof needs a "
                            "trio.abc.HalfCloseableStream, such as a TCP or Unix socket)")
        if self._eof_sent:
            await trio.lowlevel.checkpoint()
            return
        self._check_sendable()
        # From here on, sends are refused: a frame queued while the queue drains could still be
        # being written when the end of input goes out.
        self._eof_sent = True
        try:
            # An empty write through the queue: it returns once everything queued before it
            # (and any write in progress) has gone out.
            await self._queue_and_wait(b"")
        except BaseException:
            self._eof_sent = False  # not sent: a later call tries again
            raise
        await stream.send_eof()

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this FramedStream was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof() was called: this side sends no more")
        if self._send_error is not None:
            raise trio.BrokenResourceError(
                "an earlier send on this FramedStream failed"
            ) from self._send_error

    async def _send_encoded(self, frame: bytes) -> None:
        self._check_sendable()
        await self._queue_and_wait(frame)

    async def _queue_and_wait(self, frame: bytes) -> None:
        batch = self._queued
        batch.frames.append(frame)
        while True:
            if not self._writing:
                await self._write_queued(frame)
                return
            await batch.done.wait()
            if batch.sent:
                return
            if batch.error is not None:
                if self._closed:
                    raise trio.ClosedResourceError("this FramedStream was closed")
                if self._send_error is not None:
                    raise trio.BrokenResourceError(
                        "an earlier send on this FramedStream failed"
                    ) from self._send_error
                raise trio.BrokenResourceError("send failed") from batch.error
            # The writer gave up before sending our batch: it moved our frames to a new batch.
            batch = self._queued

    async def _write_queued(self, own: bytes | None) -> None:
        self._writing = True
        try:
            while self._queued.frames:
                try:
                    await trio.lowlevel.checkpoint_if_cancelled()
                except trio.Cancelled:
                    # Nothing of the queued batch went out yet. Our own frame (if we have not
                    # sent it) is withdrawn; a waiting sender takes over the rest.
                    if own is not None:
                        self._queued.frames.remove(own)
                    self._hand_over()
                    raise
                own = None
                batch = self._queued
                self._queued = _Batch()
                frames = batch.frames
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                try:
                    await self._io.send_all(data)
                except BaseException as exc:
                    self._fail_all(batch, exc)
                    raise
                batch.sent = True
                batch.done.set()
        finally:
            self._writing = False

    def _hand_over(self) -> None:
        old = self._queued
        self._queued = _Batch(old.frames)
        old.done.set()

    def _fail_all(self, batch: _Batch, exc: BaseException) -> None:
        self._send_error = exc
        for b in (batch, self._queued):
            b.error = exc
            b.done.set()
        self._queued = _Batch()

    # -- receiving -------------------------------------------------------------------------

    async def receive_frame(self) -> bytes:
        """Return the next frame's body (extra header bytes included).

        Raises:
            trio.EndOfChannel: the peer closed the stream cleanly between frames.
            IncompleteFrame: the peer closed the stream in the middle of a frame.
            FrameTooLarge: a header announced more than ``max_frame_size``.
            FrameError: any other malformed header.
            trio.BusyResourceError: another task is receiving on this FramedStream.
            trio.ClosedResourceError: this FramedStream was closed.
        """
        if self._received:
            await trio.lowlevel.checkpoint()
            return self._received.popleft()
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this FramedStream")
        if self._closed:
            raise trio.ClosedResourceError("this FramedStream was closed")
        self._receiving = True
        try:
            while True:
                if self._eof:
                    # Raise the decoder's sticky error if it has one, else a clean EOF.
                    self.decoder.feed(b"")
                    raise trio.EndOfChannel("the peer closed the stream")
                try:
                    data = await self._io.receive()
                except OSError as exc:
                    raise trio.BrokenResourceError(f"receiving failed: {exc}") from exc
                if not data:
                    self._eof = True
                frames = self.decoder.feed(data)
                if frames:
                    if len(frames) > 1:
                        self._received.extend(frames[1:])
                    return frames[0]
        finally:
            self._receiving = False

    def receive_frame_nowait(self) -> bytes:
        """Return a frame that is already buffered, without waiting.

        Raises:
            trio.WouldBlock: no complete frame is buffered.
        """
        if self._received:
            return self._received.popleft()
        raise trio.WouldBlock

    async def receive(self) -> bytes:
        """Alias of :meth:`receive_frame`, for the :class:`trio.abc.ReceiveChannel` interface."""
        return await self.receive_frame()

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the underlying stream. Frames queued by waiting senders are dropped."""
        self._closed = True
        await self.stream.aclose()
