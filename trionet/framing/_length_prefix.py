"""Sans-I/O length-prefix framing: bytes in, frames out. No trio import, no sockets.

Theory of operation
-------------------
A frame on the wire is ``header || body``. The header is an unsigned integer of ``header_size``
bytes (1 to 8) in ``byteorder``; it counts the body's bytes. Some protocols put a few fixed bytes
right after the length and count them in it (AsyncAProto counts its version and encoding bytes):
``extra_header_size`` says how many, and the decoder checks that the announced length is at least
that. The body it hands back *includes* those extra bytes; the protocol layer above splits them.

The decoder keeps one ``bytearray`` of unconsumed input and a read offset. Complete frames are
sliced out of it; consumed bytes are dropped once per :meth:`~LengthPrefixDecoder.receive_data`
call, so the cost is linear in the bytes received whatever the split. When the buffer is empty
and a chunk holds whole frames, they are sliced straight out of the chunk without copying it into
the buffer first. The announced length is checked against ``max_frame_size`` as soon as the
header is complete, before any of the body is buffered.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import FrameError, FrameTooLarge, IncompleteFrame

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "LengthPrefixDecoder",
    "LengthPrefixEncoder",
    "NeedData",
]

ByteOrder = Literal["big", "little"]

#: Default limit on a frame's announced length: 16 MiB.
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024


class NeedData:
    """Type of the :data:`NEED_DATA` sentinel."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`LengthPrefixDecoder.next_frame` when no complete frame is buffered.
NEED_DATA: Final = NeedData()

_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _check_format(header_size: int, byteorder: str, extra_header_size: int,
                  max_frame_size: int) -> None:
    if not isinstance(header_size, int) or not 1 <= header_size <= 8:
        raise ValueError(f"header_size must be an int from 1 to 8, not {header_size!r}")
    if byteorder not in ("big", "little"):
        raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
    if not isinstance(extra_header_size, int) or extra_header_size < 0:
        raise ValueError(f"extra_header_size must be an int >= 0, not {extra_header_size!r}")
    if not isinstance(max_frame_size, int) or max_frame_size < extra_header_size:
        raise ValueError(
            f"max_frame_size must be an int >= extra_header_size, not {max_frame_size!r}"
        )
    if max_frame_size >= 1 << (8 * header_size):
        # Not an error: the header simply cannot announce more than it can hold.
        pass


class LengthPrefixEncoder:
    """Builds frames: ``header || extra || payload``.

    Args:
        header_size: bytes in the length header, 1 to 8.
        byteorder: ``"big"`` or ``"little"``.
        extra_header_size: fixed bytes after the length that the length counts.
        max_frame_size: the largest length this side will announce; larger payloads raise
            :class:`~trionet.errors.FrameTooLarge` with ``fault="local"``.
    """

    __slots__ = ("_extra", "_limit", "_struct", "byteorder", "header_size", "max_frame_size")

    def __init__(
        self,
        *,
        header_size: int = 4,
        byteorder: ByteOrder = "big",
        extra_header_size: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        _check_format(header_size, byteorder, extra_header_size, max_frame_size)
        self.header_size = header_size
        self.byteorder: ByteOrder = byteorder
        self._extra = extra_header_size
        self.max_frame_size = max_frame_size
        # The header's own capacity caps what we may send, whatever max_frame_size says.
        self._limit = min(max_frame_size, (1 << (8 * header_size)) - 1)
        code = _STRUCT_CODES.get(header_size)
        self._struct = (
            struct.Struct((">" if byteorder == "big" else "<") + code) if code else None
        )

    def header(self, length: int) -> bytes:
        """The length header for a body (extra bytes included) of *length* bytes."""
        if length > self._limit:
            raise FrameTooLarge(length, self._limit, fault="local")
        if self._struct is not None:
            return self._struct.pack(length)
        return length.to_bytes(self.header_size, self.byteorder)

    def encode(self, payload: bytes | bytearray | memoryview, extra: bytes = b"") -> bytes:
        """Return one complete frame carrying *payload*.

        Args:
            payload: the frame's payload.
            extra: exactly ``extra_header_size`` bytes to put between length and payload.

        Raises:
            FrameTooLarge: if the frame would exceed ``max_frame_size`` (``fault="local"``).
            ValueError: if *extra* has the wrong length.
        """
        if len(extra) != self._extra:
            raise ValueError(f"extra must be {self._extra} bytes, got {len(extra)}")
        length = len(payload) + self._extra
        if self._struct is not None and length <= self._limit:  # header(), inlined
            return b"".join((self._struct.pack(length), extra, payload))
        return b"".join((self.header(length), extra, payload))


class LengthPrefixDecoder:
    """Incremental length-prefix decoder.

    Feed bytes with :meth:`receive_data` (``b""`` means end of file) and take frames with
    :meth:`next_frame` (returns :data:`NEED_DATA` when none is complete) or all at once with
    :meth:`feed`.

    Args:
        header_size: bytes in the length header, 1 to 8.
        byteorder: ``"big"`` or ``"little"``.
        extra_header_size: fixed bytes after the length that the length counts; a header
            announcing fewer raises :class:`~trionet.errors.FrameError`.
        max_frame_size: the largest acceptable announced length (default 16 MiB); a header
            announcing more raises :class:`~trionet.errors.FrameTooLarge` before any of the body
            is buffered.

    Errors are sticky: once the decoder has raised, every later call raises the same error,
    since the stream's framing is lost. Frames that were complete before the bad bytes are
    still delivered first: the error is raised by the call after the one that returned them.
    """

    __slots__ = (
        "_buf",
        "_eof",
        "_error",
        "_extra",
        "_frames",
        "_hsize",
        "_limit",
        "_need",
        "_unpack_from",
        "byteorder",
        "header_size",
        "max_frame_size",
    )

    def __init__(
        self,
        *,
        header_size: int = 4,
        byteorder: ByteOrder = "big",
        extra_header_size: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        _check_format(header_size, byteorder, extra_header_size, max_frame_size)
        self.header_size = header_size
        self.byteorder: ByteOrder = byteorder
        self.max_frame_size = max_frame_size
        self._hsize = header_size
        self._extra = extra_header_size
        self._limit = max_frame_size
        code = _STRUCT_CODES.get(header_size)
        self._unpack_from: Callable[[Buffer, int], tuple[Any, ...]]
        if code is not None:
            self._unpack_from = struct.Struct(
                (">" if byteorder == "big" else "<") + code
            ).unpack_from
        else:
            self._unpack_from = self._unpack_odd
        self._buf = bytearray()
        self._need = header_size
        self._frames: deque[bytes] = deque()
        self._eof = False
        self._error: FrameError | None = None

    def _unpack_odd(self, buf: Buffer, offset: int) -> tuple[Any, ...]:
        with memoryview(buf) as view:
            return (int.from_bytes(view[offset : offset + self._hsize], self.byteorder),)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned in a frame."""
        return len(self._buf) + sum(map(len, self._frames))

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered (complete, untaken frames do not count)."""
        return not self._buf

    @property
    def pending_error(self) -> FrameError | None:
        """The error the next call will raise, if the input is already known to be bad.

        :meth:`feed` returns the frames completed before bad bytes and raises on the *next*
        call; a server that must answer at once (the peer may send nothing more) can look here.
        """
        return self._error

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes; ``b""`` signals end of file.

        Raises:
            FrameTooLarge: a header announced more than ``max_frame_size``.
            FrameError: a header announced less than ``extra_header_size``.
            IncompleteFrame: end of file in the middle of a frame.
            RuntimeError: data after end of file.
        """
        for frame in self.feed(data):
            self._frames.append(frame)

    def next_frame(self) -> bytes | NeedData:
        """Return the next complete frame's body, or :data:`NEED_DATA`."""
        if self._frames:
            return self._frames.popleft()
        if self._error is not None:
            raise self._error
        return NEED_DATA

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes and return every frame they complete, in order.

        This is the fast path for drivers: one call per chunk received. ``b""`` signals end of
        file. Frames already queued by :meth:`receive_data` are returned first.

        Raises:
            FrameTooLarge: a header announced more than ``max_frame_size``.
            FrameError: a header announced less than ``extra_header_size``.
            IncompleteFrame: end of file in the middle of a frame.
            RuntimeError: data after end of file.
        """
        if self._error is not None:
            raise self._error
        if self._eof:
            if data:
                raise RuntimeError("received data after end of file")
            return []
        out: list[bytes] = []
        if self._frames:
            out.extend(self._frames)
            self._frames.clear()
        if not data:
            self._eof = True
            pending = len(self._buf)
            if pending:
                expected = self._hsize
                if pending >= self._hsize:
                    expected = self._hsize + self._unpack_from(self._buf, 0)[0]
                self._error = IncompleteFrame(expected, pending)
                self._drop_buffer()
                raise self._error
            return out

        hsize = self._hsize
        buf = self._buf
        source = data if type(data) is bytes else bytes(data)
        pos = 0
        end = len(source)
        if buf:
            # A frame is pending: move over only the bytes that complete it (a large frame
            # arriving in many chunks costs O(n)), and decode the rest from *source* in place.
            if len(buf) < hsize:
                pos = min(hsize - len(buf), end)
                buf += source[:pos]
                if len(buf) < hsize:
                    return out
                try:
                    self._need = hsize + self._check_length(self._unpack_from(buf, 0)[0])
                except FrameError as exc:
                    return self._fail(exc, out)
            take = min(self._need - len(buf), end - pos)
            with memoryview(source) as view:
                buf += view[pos : pos + take]
            pos += take
            if len(buf) < self._need:
                return out
            with memoryview(buf) as view:
                body = view[hsize:]
                out.append(bytes(body))
                body.release()
            buf.clear()
            self._need = hsize
        limit = self._limit
        extra = self._extra
        unpack_from = self._unpack_from
        append = out.append
        while end - pos >= hsize:
            length = unpack_from(source, pos)[0]
            if length > limit or length < extra:
                try:
                    self._check_length(length)
                except FrameError as exc:
                    return self._fail(exc, out)
            start = pos + hsize
            stop = start + length
            if stop > end:
                break
            append(source[start:stop])
            pos = stop
        if pos < end:
            with memoryview(source) as view:
                buf += view[pos:]
            self._need = (end - pos >= hsize and hsize + unpack_from(source, pos)[0]) or hsize
        else:
            self._need = hsize
        return out

    def _check_length(self, length: int) -> int:
        if length > self._limit:
            raise FrameTooLarge(length, self._limit, fault="remote")
        if length < self._extra:
            raise FrameError(
                f"header announced {length} bytes, less than the {self._extra} fixed "
                "header bytes the length must count",
                fault="remote",
            )
        return length

    def _fail(self, exc: FrameError, out: list[bytes]) -> list[bytes]:
        # Frames before the bad header are good: hand them over, raise on the next call.
        self._error = exc
        self._drop_buffer()
        if out:
            return out
        raise exc

    def _drop_buffer(self) -> None:
        self._buf = bytearray()
        self._need = self._hsize
