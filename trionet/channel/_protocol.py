"""Sans-I/O core of the request-reply channel: frames in, messages out, and back.

No trio import and no sockets here. :class:`ChannelProtocol` owns the message numbering, the
table of requests still waiting for a reply and the decoding of everything the peer sends.

Wire format (aiomas 2.x)
------------------------
Each message is one length-prefixed frame: a 4-byte big-endian length, then the codec's
encoding of the 3-element list ``[msg_type, msg_id, content]``:

* ``REQUEST`` (0): ``content`` is the request; ``msg_id`` is chosen by the sender.
* ``RESULT`` (1): ``content`` is the reply value for request ``msg_id``.
* ``EXCEPTION`` (2): ``content`` is the text of the remote traceback, as
  :func:`traceback.format_exception` writes it (that is what aiomas sends).

Both ends number their own requests 0, 1, 2, ... independently. A reply whose id is below the
next id this end would hand out but is no longer pending is *late*: its request was forgotten
(the caller gave up, typically cancelled by a deadline). Late replies are dropped and counted.
A reply to an id this end never used is a protocol error.
"""

from __future__ import annotations

import re
import struct
import traceback
from typing import Any, Final, NamedTuple

from ..codecs import Codec, get_codec
from ..errors import ChannelError, CodecError, FrameError, FrameTooLarge
from ..framing import DEFAULT_MAX_FRAME_SIZE, LengthPrefixDecoder

__all__ = [
    "EXCEPTION",
    "HEADER_SIZE",
    "REQUEST",
    "RESULT",
    "ChannelProtocol",
    "ExceptionReceived",
    "MessageError",
    "RequestReceived",
    "ResultReceived",
    "format_remote_exception",
    "remote_type_name",
]

#: Message type of a request.
REQUEST: Final = 0
#: Message type of a successful reply.
RESULT: Final = 1
#: Message type of a failed reply; its content is the remote traceback text.
EXCEPTION: Final = 2
#: Bytes in the length prefix (unsigned, big-endian), as in aiomas.
HEADER_SIZE: Final = 4
_MAX_HEADER_VALUE: Final = (1 << (8 * HEADER_SIZE)) - 1
_pack_header: Final = struct.Struct(">I").pack


class MessageError(ChannelError):
    """A frame decoded fine but is not a valid channel message.

    Raised for a message that is not a 3-element list, an unknown message type, a message id
    that is not an integer, and a reply to a request id this end never sent. Always the peer's
    fault (``fault="remote"``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, fault="remote")


class RequestReceived(NamedTuple):
    """The peer sent a request; answer it with :meth:`ChannelProtocol.result` or
    :meth:`ChannelProtocol.exception` using the same ``msg_id``."""

    msg_id: int
    content: Any


class ResultReceived(NamedTuple):
    """The peer answered our request ``msg_id`` with ``value``.

    ``token`` is whatever was passed to :meth:`ChannelProtocol.request` for that request.
    """

    msg_id: int
    token: Any
    value: Any


class ExceptionReceived(NamedTuple):
    """The peer's handler raised while answering our request ``msg_id``.

    ``traceback`` is the remote traceback text; ``remote_type`` the exception's type name
    parsed from it (``None`` if it could not be found).
    """

    msg_id: int
    token: Any
    traceback: str
    remote_type: str | None


Event = RequestReceived | ResultReceived | ExceptionReceived

_TRACEBACK_HEADER = "Traceback (most recent call last):"
_GROUP_HEADER = "Exception Group Traceback (most recent call last):"
_EXC_LINE = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?::(?: |$)|$)")


def format_remote_exception(exc: BaseException) -> str:
    """Return the text aiomas sends for a failed request: the formatted traceback of *exc*."""
    return "".join(traceback.format_exception(exc))


def remote_type_name(remote_traceback: str) -> str | None:
    """Find the exception's type name in a formatted traceback.

    Returns the qualified name as the traceback prints it (``"ValueError"``,
    ``"mypkg.errors.Oops"``), or ``None`` if the text does not look like a Python traceback.
    For chained exceptions this is the last (outermost) one; for an exception group, the
    group's own type.
    """
    lines = remote_traceback.splitlines()
    start = 0
    for index, line in enumerate(lines):
        if line == _TRACEBACK_HEADER:
            start = index + 1
        elif line.lstrip(" +") == _GROUP_HEADER:
            # Exception groups are drawn with a "  | " margin; the group's own line is the
            # first unindented one inside the margin.
            for inner in lines[index + 1 :]:
                if inner.startswith("  | ") and not inner.startswith("  |  "):
                    match = _EXC_LINE.match(inner[4:])
                    if match:
                        return match.group(1)
            return None
    for line in lines[start:]:
        if line and not line[0].isspace():
            match = _EXC_LINE.match(line)
            return match.group(1) if match else None
    return None


class ChannelProtocol:
    """The request-reply protocol state of one connection, without I/O.

    Turn outgoing messages into frames with :meth:`request`, :meth:`result` and
    :meth:`exception`; feed received bytes to :meth:`receive_data` and act on the
    :class:`RequestReceived`, :class:`ResultReceived` and :class:`ExceptionReceived` events it
    returns. ``receive_data(b"")`` signals end of file.

    Args:
        codec: a codec name (``"json"``, the aiomas 2.x default, or ``"msgpack"``), a codec
            object, or a codec class to instantiate (see :mod:`trionet.codecs`).
        max_frame_size: the largest frame accepted or sent, in bytes (the 4-byte prefix is not
            counted). A header announcing more fails at once, before the body is read.

    Errors from :meth:`receive_data` are fatal for the connection and sticky (every later call
    raises again): :class:`~trionet.errors.FrameTooLarge`,
    :class:`~trionet.errors.IncompleteFrame` (end of file mid-frame),
    :class:`~trionet.errors.CodecError` (undecodable bytes) and :class:`MessageError`.
    Errors from the sending methods (``fault="local"``) are not fatal: nothing was sent.
    """

    __slots__ = (
        "_decode",
        "_decoder",
        "_encode",
        "_error",
        "_limit",
        "_next_id",
        "_pending",
        "codec",
        "late_replies",
        "max_frame_size",
        "replies_sent",
        "requests_received",
        "requests_sent",
    )

    def __init__(
        self,
        codec: str | Codec | type[Codec] = "json",
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        # A codec class (as aiomas takes) is instantiated; names and objects as get_codec does.
        self.codec: Codec = codec() if isinstance(codec, type) else get_codec(codec)
        self.max_frame_size = max_frame_size
        self._decoder = LengthPrefixDecoder(
            header_size=HEADER_SIZE, byteorder="big", max_frame_size=max_frame_size
        )
        # What the 4-byte header can announce caps the limit, whatever max_frame_size says.
        self._limit = min(max_frame_size, _MAX_HEADER_VALUE)
        self._encode = self.codec.encode
        self._decode = self.codec.decode
        self._next_id = 0
        self._pending: dict[int, Any] = {}
        self._error: ChannelError | FrameError | CodecError | None = None
        #: Replies that arrived for requests already forgotten (see :meth:`forget`).
        self.late_replies = 0
        #: Requests framed by :meth:`request`.
        self.requests_sent = 0
        #: Requests received from the peer.
        self.requests_received = 0
        #: Replies framed by :meth:`result` and :meth:`exception`.
        self.replies_sent = 0

    # -- sending -----------------------------------------------------------------------------

    def _frame(self, message: list[Any]) -> bytes:
        body = self._encode(message)
        size = len(body)
        if size > self._limit:
            raise FrameTooLarge(size, self._limit, fault="local")
        return _pack_header(size) + body

    def request(self, content: Any, token: Any = None) -> tuple[int, bytes]:
        """Frame a new request; return its id and the bytes to send.

        The request stays pending until its reply arrives or :meth:`forget` is called. *token*
        is handed back in the reply event (the driver keeps its waiter there).

        Raises:
            CodecError: *content* cannot be encoded (``fault="local"``; nothing is pending).
            FrameTooLarge: the encoded request exceeds ``max_frame_size`` (``fault="local"``).
        """
        msg_id = self._next_id
        body = self._encode([REQUEST, msg_id, content])
        size = len(body)
        if size > self._limit:
            raise FrameTooLarge(size, self._limit, fault="local")
        frame = _pack_header(size) + body
        self._next_id = msg_id + 1
        self._pending[msg_id] = token
        self.requests_sent += 1
        return msg_id, frame

    def result(self, msg_id: int, value: Any) -> bytes:
        """Frame the successful reply *value* to the peer's request *msg_id*.

        Raises:
            CodecError: *value* cannot be encoded (``fault="local"``).
            FrameTooLarge: the reply exceeds ``max_frame_size`` (``fault="local"``).
        """
        body = self._encode([RESULT, msg_id, value])  # _frame, inlined: a hot path
        size = len(body)
        if size > self._limit:
            raise FrameTooLarge(size, self._limit, fault="local")
        self.replies_sent += 1
        return _pack_header(size) + body

    def exception(self, msg_id: int, error: BaseException | str) -> bytes:
        """Frame a failed reply to the peer's request *msg_id*.

        Args:
            msg_id: the request's id.
            error: the exception (its formatted traceback is sent, as aiomas does) or the
                traceback text itself.

        Raises:
            FrameTooLarge: the traceback text exceeds ``max_frame_size`` (``fault="local"``).
        """
        text = error if isinstance(error, str) else format_remote_exception(error)
        frame = self._frame([EXCEPTION, msg_id, text])
        self.replies_sent += 1
        return frame

    def forget(self, msg_id: int) -> bool:
        """Stop waiting for the reply to *msg_id*; a reply arriving later is dropped and counted.

        Returns whether the request was still pending.
        """
        return self._pending.pop(msg_id, _MISSING) is not _MISSING

    def forget_all(self) -> list[Any]:
        """Forget every pending request (the connection is gone); return their tokens."""
        tokens = list(self._pending.values())
        self._pending.clear()
        return tokens

    @property
    def pending(self) -> int:
        """Number of requests sent and still waiting for their reply."""
        return len(self._pending)

    @property
    def next_id(self) -> int:
        """The id the next request will get."""
        return self._next_id

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered."""
        return self._decoder.at_frame_boundary

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed received bytes (``b""`` at end of file); return the complete messages.

        Raises:
            FrameTooLarge: a header announced more than ``max_frame_size``.
            IncompleteFrame: end of file in the middle of a frame.
            CodecError: a frame's bytes are not valid for the codec.
            MessageError: a frame is not a valid channel message.
        """
        events: list[Event] = []
        for kind, msg_id, token, content in self.receive_messages(data):
            if kind == REQUEST:
                events.append(RequestReceived(msg_id, content))
            elif kind == RESULT:
                events.append(ResultReceived(msg_id, token, content))
            else:
                events.append(ExceptionReceived(msg_id, token, content, remote_type_name(content)))
        return events

    def receive_messages(
        self, data: bytes | bytearray | memoryview
    ) -> list[tuple[int, int, Any, Any]]:
        """The fast form of :meth:`receive_data`, for drivers: plain tuples, no event objects.

        Each message is ``(msg_type, msg_id, token, content)``: for a request, *token* is
        ``None``; for a reply, it is the request's token; for an ``EXCEPTION``, *content* is
        the traceback text. Errors as for :meth:`receive_data`; when valid messages precede
        the bad input they are returned first, and :meth:`check` (or the next call) raises.
        """
        if self._error is not None:
            raise self._error
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self._error = exc
            raise
        if not frames:
            return []
        messages: list[tuple[int, int, Any, Any]] = []
        decode = self._decode
        pending = self._pending
        try:
            for frame in frames:
                message = decode(frame)
                kind = type(message)
                if kind is not list and kind is not tuple:
                    raise MessageError(
                        f"expected a [msg_type, msg_id, content] list, got {kind.__name__}"
                    )
                try:
                    msg_type, msg_id, content = message
                except ValueError:
                    raise MessageError(
                        f"expected a 3-element [msg_type, msg_id, content] list, got "
                        f"{len(message)} elements"
                    ) from None
                if type(msg_id) is not int:
                    raise MessageError(f"message id must be an integer, got {msg_id!r:.40}")
                if type(msg_type) is not int:
                    raise MessageError(f"message type must be an integer, got {msg_type!r:.40}")
                if msg_type == REQUEST:
                    self.requests_received += 1
                    messages.append((REQUEST, msg_id, None, content))
                    continue
                if msg_type != RESULT and msg_type != EXCEPTION:
                    raise MessageError(f"unknown message type {msg_type!r:.40}")
                token = pending.pop(msg_id, _MISSING)
                if token is _MISSING:
                    if 0 <= msg_id < self._next_id:
                        self.late_replies += 1
                        continue
                    raise MessageError(f"reply to unknown request id {msg_id}")
                if msg_type == EXCEPTION and type(content) is not str:
                    content = repr(content)
                messages.append((msg_type, msg_id, token, content))
        except (CodecError, MessageError) as exc:
            self._error = exc
        else:
            # The decoder may have found bad bytes after these frames: look now.
            try:
                self._decoder.next_frame()
            except FrameError as exc:
                self._error = exc
        if self._error is not None and not messages:
            raise self._error
        return messages

    @property
    def error(self) -> ChannelError | FrameError | CodecError | None:
        """The error that ended the receiving side, if any (see :meth:`check`)."""
        return self._error

    def check(self) -> None:
        """Raise the receive error found after the events last returned, if any.

        :meth:`receive_data` hands over the messages that were complete before bad input and
        keeps the error for later; a driver calls this right after acting on those events so
        that the connection fails at once rather than on the next read.
        """
        if self._error is not None:
            raise self._error


class _Missing:
    __slots__ = ()


_MISSING: Final = _Missing()

