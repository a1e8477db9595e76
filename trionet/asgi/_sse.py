"""Server-sent events: :class:`EventSourceResponse` and :class:`ServerSentEvent`.

An event stream is a response that never has a length: the status line and headers go out at
once, then one ``text/event-stream`` block per event as the producer hands it over. Three things
make it safe to leave open for hours:

* **Backpressure.** The producer is pulled only when the previous event has been handed to the
  server, and the server's ``send`` waits while the client is not reading (Hypercorn's worker
  awaits the socket write; trionet's waits past 256 KiB queued). At most two events are pulled
  ahead of what the connection has accepted, so a slow browser never makes the process buffer
  more than that.
* **Disconnects.** A task waits for ``http.disconnect``; when it comes, the producer is cancelled
  at once (an async generator gets ``trio.Cancelled`` at its ``await`` and is closed; a receive
  channel is closed, so its sender's next ``send`` raises ``trio.BrokenResourceError``).
* **Keep-alive.** A comment line goes out whenever no event has been sent for ``ping`` seconds,
  so proxies and load balancers do not cut an idle stream.

A reconnecting browser sends the ``id`` of the last event it received as ``Last-Event-ID``;
:func:`last_event_id` reads it (bounded in length, control characters refused), and a producer
*factory* given as the content gets it as its argument, to resume after that event.
"""

from __future__ import annotations

import json as _json
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, TypeAlias

import trio

from ._background import BackgroundTask
from ._datastructures import _to_raw
from ._errors import HTTPException
from ._requests import HTTPConnection
from ._responses import HeadersArg, Response
from ._types import Receive, Scope, Send
from ._util import collapse_single_error

__all__ = ["DEFAULT_PING_INTERVAL", "MAX_LAST_EVENT_ID", "EventSourceResponse",
           "ServerSentEvent", "last_event_id"]

#: Seconds without an event after which :class:`EventSourceResponse` sends a keep-alive comment.
DEFAULT_PING_INTERVAL = 15.0
#: The longest ``Last-Event-ID`` accepted, in bytes (a longer one is answered with 400).
MAX_LAST_EVENT_ID = 1024

_JSON = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_BREAKS = ("\r\n", "\r", "\n")


def _lines(text: str) -> list[str]:
    # The SSE line terminators are CRLF, CR and LF (and nothing else: str.splitlines() would
    # also split on \x0b, \x1c, \u2028..., which a browser keeps inside the line).
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _single_line(field: str, value: str) -> str:
    if any(brk in value for brk in _BREAKS) or "\0" in value:
        raise ValueError(f"an event's {field} cannot contain CR, LF or NUL: {value!r}")
    return value


class ServerSentEvent:
    """One event of a ``text/event-stream``.

    ``data`` may span several lines: each line becomes its own ``data:`` field, so a newline in
    user text can never start a field of its own. ``event`` and ``id`` must be one line (a
    ``ValueError`` says so), and ``retry`` a non-negative number of milliseconds.

    Args:
        data: the payload; ``str`` as is, ``bytes`` decoded as UTF-8, anything else encoded
            as compact JSON. ``None`` sends no ``data`` field.
        event: the event type (the browser's ``addEventListener(type)``; default ``message``).
        id: the event id; the browser sends the last one back as ``Last-Event-ID`` when it
            reconnects.
        retry: how many milliseconds the browser waits before reconnecting.
        comment: a comment (ignored by browsers; each line becomes a ``:`` line).

    Raises:
        ValueError: a field cannot be represented.
    """

    __slots__ = ("comment", "data", "event", "id", "retry")

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        elif data is not None and not isinstance(data, str):
            data = _JSON.encode(data)
        self.data: str | None = data
        self.event = None if event is None else _single_line("event", event)
        self.id = None if id is None else _single_line("id", str(id))
        if retry is not None and (not isinstance(retry, int) or retry < 0):
            raise ValueError(f"retry must be a non-negative int (milliseconds), got {retry!r}")
        self.retry = retry
        self.comment = comment

    def encode(self) -> bytes:
        """The event as ``text/event-stream`` bytes, ending with the blank line."""
        out: list[str] = []
        if self.comment is not None:
            out.extend(f": {line}" if line else ":" for line in _lines(self.comment))
        if self.event is not None:
            out.append(f"event: {self.event}")
        if self.id is not None:
            out.append(f"id: {self.id}")
        if self.retry is not None:
            out.append(f"retry: {self.retry}")
        if self.data is not None:
            out.extend(f"data: {line}" for line in _lines(self.data))
        out.append("\n")
        return "\n".join(out).encode("utf-8")

    def __repr__(self) -> str:
        fields = ("data", "event", "id", "retry", "comment")
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in fields if getattr(self, name) is not None
        )
        return f"ServerSentEvent({shown})"


def _as_event(item: Any) -> ServerSentEvent:
    if isinstance(item, ServerSentEvent):
        return item
    if isinstance(item, Mapping):
        return ServerSentEvent(**item)
    return ServerSentEvent(item)


#: What an event stream may be fed: an async iterable of events, or a trio receive channel.
EventSource: TypeAlias = "AsyncIterable[Any] | trio.abc.ReceiveChannel[Any]"
#: A producer that resumes: called with the client's ``Last-Event-ID`` (or ``None``).
EventSourceFactory: TypeAlias = "Callable[[str | None], EventSource]"


def _check_last_event_id(raw: bytes, max_length: int) -> str | None:
    if not raw:
        return None
    if len(raw) > max_length:
        raise HTTPException(400, f"Last-Event-ID is longer than {max_length} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "Last-Event-ID is not UTF-8") from None
    if any(char < " " or char == "\x7f" for char in text):
        raise HTTPException(400, "Last-Event-ID contains a control character")
    return text


def _raw_last_event_id(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            return bytes(value).strip(b" \t")
    return b""


def last_event_id(
    request: HTTPConnection | Scope, *, max_length: int = MAX_LAST_EVENT_ID
) -> str | None:
    """The ``Last-Event-ID`` a reconnecting ``EventSource`` sent (the ``id`` of the last event
    it received), or ``None`` on a first connection (no header, or an empty one).

    Args:
        request: the :class:`Request` (or its ASGI scope).
        max_length: the longest id accepted, in bytes.

    Raises:
        HTTPException: 400 if the id is longer than ``max_length`` bytes, not UTF-8, or
            contains a control character (a browser only sends back what the server sent).
    """
    scope = request.scope if isinstance(request, HTTPConnection) else request
    return _check_last_event_id(_raw_last_event_id(scope), max_length)


class EventSourceResponse(Response):
    """A ``text/event-stream`` response fed by an async iterator or a trio receive channel.

    ``content`` may also be a producer *factory*: a function called, when the response is
    sent, with the client's ``Last-Event-ID`` (see :func:`last_event_id`; ``None`` on a first
    connection) and returning the events, so that a reconnecting client resumes after the last
    event it received. A malformed ``Last-Event-ID`` is then answered with 400::

        def produce(last_id: str | None) -> AsyncIterator[ServerSentEvent]:
            return history.events_after(int(last_id) if last_id else -1)

        return EventSourceResponse(produce)

    Each item becomes one event: a :class:`ServerSentEvent`, a mapping of its arguments
    (``{"data": ..., "event": "tick", "id": 7}``), or anything else as the ``data`` (``str``
    as is, other values as JSON). See the module notes on backpressure and disconnects::

        @router.route("/ticks")
        async def ticks(request: Request) -> Response:
            async def produce():
                for n in itertools.count():
                    yield ServerSentEvent(n, event="tick", id=n)
                    await trio.sleep(1)
            return EventSourceResponse(produce())

    The status line and headers are sent at once (a browser's ``EventSource`` opens then),
    so an error the producer raises later aborts the connection instead of becoming an error
    response. The response closes what it was given when it ends: an async generator with
    ``aclose()``, a receive channel with ``aclose()``.

    Args:
        content: the events: an async iterable, a ``trio.abc.ReceiveChannel``, or a
            function of the ``Last-Event-ID`` returning one of these.
        status_code: the HTTP status.
        headers: extra headers. ``Cache-Control: no-store`` and ``X-Accel-Buffering: no``
            (which tells nginx not to buffer) are added unless given.
        ping: seconds without an event after which a keep-alive comment is sent; ``None``
            sends none.
        ping_comment: the text of that comment.
        retry: if given, a first ``retry:`` field (milliseconds) sent before any event: how
            long the browser waits before it reconnects.
        max_last_event_id: the longest ``Last-Event-ID`` a factory is given, in bytes.
        background: a :class:`BackgroundTask` to run once the stream has ended (also after a
            disconnect).

    Attributes:
        ping: the keep-alive interval.
    """

    def __init__(
        self,
        content: EventSource | EventSourceFactory,
        status_code: int = 200,
        headers: HeadersArg = None,
        *,
        ping: float | None = DEFAULT_PING_INTERVAL,
        ping_comment: str = "ping",
        retry: int | None = None,
        max_last_event_id: int = MAX_LAST_EVENT_ID,
        background: BackgroundTask | None = None,
    ) -> None:
        if not 200 <= status_code <= 599:
            raise ValueError(f"status_code must be 200-599, got {status_code}")
        if ping is not None and not ping > 0:
            raise ValueError(f"ping must be a positive number of seconds or None, got {ping!r}")
        self.status_code = status_code
        self.media_type = "text/event-stream"
        self.body = b""
        self.content: EventSource | None = None
        self._factory: EventSourceFactory | None = None
        if isinstance(content, trio.abc.ReceiveChannel) or hasattr(content, "__aiter__"):
            self.content = content
        elif callable(content):
            self._factory = content
        else:
            raise TypeError("content must be an async iterable, a trio receive channel, or a "
                            f"function of the Last-Event-ID, not {type(content).__name__}")
        self.max_last_event_id = max_last_event_id
        self.background = background
        self.ping = ping
        self._ping_bytes = ServerSentEvent(comment=ping_comment).encode()
        self._first = ServerSentEvent(retry=retry).encode() if retry is not None else b""
        raw = _to_raw(headers) if headers else []
        present = {name for name, _ in raw}
        if b"cache-control" not in present:
            raw.append((b"cache-control", b"no-store"))
        if b"x-accel-buffering" not in present:
            raw.append((b"x-accel-buffering", b"no"))
        self._raw_headers = raw
        self._add_default_headers(None)

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        """Send the headers, then each event as the producer hands it over."""
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self._raw_headers,
        }
        if scope is not None and scope.get("method") == "HEAD":
            await self._close_content()
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        if self._factory is not None:
            raw = _raw_last_event_id(scope) if scope is not None else b""
            try:
                resume_after = _check_last_event_id(raw, self.max_last_event_id)
            except HTTPException as exc:
                await Response.text(f"{exc.detail}", exc.status_code).send_to(
                    scope, receive, send)
                return
            self.content = self._factory(resume_after)
        disconnected = trio.Event()
        try:
            with collapse_single_error():
                async with trio.open_nursery() as nursery:
                    if receive is not None:
                        nursery.start_soon(_watch_disconnect, receive, nursery, disconnected)
                    await send(start)
                    if self._first:
                        await _send_chunk(send, self._first)
                    await self._pump(nursery, send)
                    nursery.cancel_scope.cancel()
        finally:
            await self._close_content()
        if not disconnected.is_set():
            await send({"type": "http.response.body", "body": b""})

    async def _pump(self, nursery: trio.Nursery, send: Send) -> None:
        content = self.content
        assert content is not None  # the factory was called in send_to
        if isinstance(content, trio.abc.ReceiveChannel):
            channel: trio.abc.ReceiveChannel[Any] = content
        else:
            # Zero capacity: the iterator is pulled only once the previous event has been
            # taken, so the producer runs at most one event ahead of the event being sent.
            sender, channel = trio.open_memory_channel[Any](0)
            nursery.start_soon(_feed, aiter(content), sender)
        ping = self.ping if self.ping is not None else math.inf
        async with channel:
            while True:
                item: Any = _NOTHING
                with trio.move_on_after(ping):
                    try:
                        item = await channel.receive()
                    except trio.EndOfChannel:
                        return
                if item is _NOTHING:
                    await _send_chunk(send, self._ping_bytes)
                else:
                    await _send_chunk(send, _as_event(item).encode())

    async def _close_content(self) -> None:
        content = self.content
        aclose = getattr(content, "aclose", None)
        if aclose is not None:
            await aclose()


_NOTHING: Any = object()


async def _send_chunk(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _feed(iterator: AsyncIterator[Any], sender: trio.MemorySendChannel[Any]) -> None:
    async with sender:
        async for item in iterator:
            await sender.send(item)


async def _watch_disconnect(receive: Receive, nursery: trio.Nursery, flag: trio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            flag.set()
            nursery.cancel_scope.cancel()
            return
