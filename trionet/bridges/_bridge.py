"""A :class:`Bridge`: an event-stream and a websocket endpoint fed by a subscription."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import trio

from .._util import collapse_single_error
from ..asgi import (
    EventSourceResponse,
    HTTPConnection,
    Request,
    Response,
    ServerSentEvent,
    WebSocket,
    WebSocketDisconnect,
)
from ..asgi._types import Receive, Scope, Send
from ..errors import ConfigurationError, TrionetError
from ._feed import (
    DEFAULT_MAX_BUFFER_SIZE,
    Feed,
    FeedStatistics,
    Overflow,
    check_feed_options,
    open_feed,
)
from ._sources import Source, describe

__all__ = ["DEFAULT_MAX_STREAMS", "Bridge", "BridgeFull", "BridgeStatistics"]

T = TypeVar("T")

logger = logging.getLogger("trionet.bridges")

#: The default limit on a bridge's open streams (each holds one subscription).
DEFAULT_MAX_STREAMS: Final = 1000
#: What entering a source may raise that means "not available now" (503), not a bug.
_UNAVAILABLE = (TrionetError, OSError, trio.ClosedResourceError)
#: The websocket close code when the subscription ended (the server is going away).
_GOING_AWAY: Final = 1001
#: ... and when it failed (the error is logged).
_INTERNAL_ERROR: Final = 1011


@dataclass(slots=True)
class BridgeStatistics:
    """Counters of a :class:`Bridge`, over all its streams.

    Attributes:
        max_buffer_size: each stream's capacity.
        overflow: the policy of a full stream.
        open_streams: streams open now.
        streams: streams opened so far.
        refused: connections refused (503): over ``max_streams``, or the subscription failed.
        buffered: messages buffered now, all streams together.
        high_water: the most messages one stream ever buffered (never above
            ``max_buffer_size``).
        received: messages read from the subscriptions.
        delivered: messages handed to the connections.
        dropped: messages dropped by ``"drop-oldest"``.
        paused: how many times ``"pause"`` stopped reading a subscription.
    """

    max_buffer_size: int
    overflow: str
    open_streams: int = 0
    streams: int = 0
    refused: int = 0
    buffered: int = 0
    high_water: int = 0
    received: int = 0
    delivered: int = 0
    dropped: int = 0
    paused: int = 0


def _default_event(message: Any) -> ServerSentEvent:
    return ServerSentEvent(describe(message))


def _default_text(message: Any) -> str:
    return json.dumps(describe(message), ensure_ascii=False, separators=(",", ":"))


class _Events(trio.abc.ReceiveChannel[Any]):
    """A feed whose messages come out formatted as events."""

    def __init__(self, feed: Feed[Any], format_event: Callable[[Any], Any]) -> None:
        self._feed = feed
        self._format = format_event

    async def receive(self) -> Any:
        return self._format(await self._feed.receive())

    async def aclose(self) -> None:
        await self._feed.aclose()


class Bridge(Generic[T]):
    """Server-sent events and websocket endpoints fed by a subscription, with backpressure.

    Every connection gets its own subscription (made by *source*) and its own bounded
    :class:`~trionet.bridges.Feed` between that subscription and the response, so a slow
    browser costs at most *max_buffer_size* messages of memory; what happens when its feed is
    full is the *overflow* policy (``"drop-oldest"``, the default, or ``"pause"``; see
    :mod:`trionet.bridges`)::

        live = Bridge(mqtt_source(client, "sensors/#"))
        router.add_route("/events", live.event_stream)        # text/event-stream
        router.add_websocket_route("/ws/events", live.websocket)

    The subscription is made before the response starts (so when a browser's ``EventSource``
    or ``WebSocket`` fires ``open``, messages published from then on reach it); when it cannot
    be made, the answer is a 503. The stream ends when the browser goes away (the
    subscription is then left) or when the subscription ends (its client closed).

    Args:
        source: makes one subscription per connection: :func:`mqtt_source`,
            :func:`bus_source`, :func:`kafka_source`, or any callable of that shape.
        max_buffer_size: each stream's capacity, in messages.
        overflow: what a full stream does: ``"drop-oldest"`` or ``"pause"``.
        max_streams: streams open at once; more are refused with 503.
        event: turns a message into an event: a :class:`~trionet.asgi.ServerSentEvent`, a
            mapping of its fields, or the data. Default: JSON data from :func:`describe`.
        text: turns a message into a websocket message (``str`` or ``bytes``). Default: the
            JSON text of :func:`describe`.
        ping: seconds without an event before a keep-alive comment (``None``: never).
        retry: the reconnection delay (milliseconds) sent to browsers first, if given.
    """

    def __init__(
        self,
        source: Source[T],
        *,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
        overflow: Overflow = "drop-oldest",
        max_streams: int = DEFAULT_MAX_STREAMS,
        event: Callable[[T], Any] | None = None,
        text: Callable[[T], str | bytes] | None = None,
        ping: float | None = 15.0,
        retry: int | None = None,
    ) -> None:
        check_feed_options(max_buffer_size, overflow)
        if not isinstance(max_streams, int) or max_streams < 1:
            raise ConfigurationError(f"max_streams must be an int >= 1, got {max_streams!r}")
        if ping is not None and not (ping > 0 and math.isfinite(ping)):
            raise ConfigurationError(f"ping must be a positive number of seconds, got {ping!r}")
        self.source = source
        self.max_buffer_size = max_buffer_size
        self.overflow: Overflow = overflow
        self.max_streams = max_streams
        self.ping = ping
        self.retry = retry
        self._event: Callable[[Any], Any] = event or _default_event
        self._text: Callable[[Any], str | bytes] = text or _default_text
        self._feeds: set[Feed[T]] = set()
        self._closed = FeedStatistics(max_buffer_size, overflow)
        self._streams = 0
        self._refused = 0
        self._closing = False

    def __repr__(self) -> str:
        return (f"<Bridge max_buffer_size={self.max_buffer_size} overflow={self.overflow!r} "
                f"open_streams={len(self._feeds)}>")

    @property
    def statistics(self) -> BridgeStatistics:
        """A snapshot of the counters over every stream, open and closed."""
        done = self._closed
        stats = BridgeStatistics(
            self.max_buffer_size, self.overflow, open_streams=len(self._feeds),
            streams=self._streams, refused=self._refused, high_water=done.high_water,
            received=done.received, delivered=done.delivered, dropped=done.dropped,
            paused=done.paused,
        )
        for feed in self._feeds:
            live = feed.statistics
            stats.buffered += live.buffered
            stats.high_water = max(stats.high_water, live.high_water)
            stats.received += live.received
            stats.delivered += live.delivered
            stats.dropped += live.dropped
            stats.paused += live.paused
        return stats

    # -- feeds --------------------------------------------------------------------------------

    @asynccontextmanager
    async def open_feed(self, connection: HTTPConnection) -> AsyncIterator[Feed[T]]:
        """Subscribe for *connection* and yield its bounded :class:`Feed` (for endpoints of
        your own); leaving the block unsubscribes.

        Raises:
            BridgeFull: (a :class:`~trionet.errors.TrionetError`) ``max_streams`` are open.
        """
        if self._closing:
            raise BridgeFull("the bridge is closed")
        if len(self._feeds) >= self.max_streams:
            raise BridgeFull(f"{self.max_streams} streams are open already")
        subscription: Any = self.source(connection)
        async with open_feed(subscription, max_buffer_size=self.max_buffer_size,
                             overflow=self.overflow) as feed:
            self._feeds.add(feed)
            self._streams += 1
            try:
                yield feed
            finally:
                self._feeds.discard(feed)
                self._retire(feed.statistics)

    def close(self) -> None:
        """End every open stream (after what is buffered) and refuse new ones with 503.

        Call it when a graceful shutdown begins: a server waits for its in-flight responses,
        and an event stream would otherwise never finish.
        """
        self._closing = True
        for feed in self._feeds:
            feed.end()

    def _retire(self, stats: FeedStatistics) -> None:
        done = self._closed
        done.high_water = max(done.high_water, stats.high_water)
        done.received += stats.received
        done.delivered += stats.delivered
        done.dropped += stats.dropped
        done.paused += stats.paused

    async def _enter(self, stack: AsyncExitStack, connection: HTTPConnection) -> Feed[T] | str:
        """The connection's feed, or why there is none (to answer 503)."""
        try:
            return await stack.enter_async_context(self.open_feed(connection))
        except ConfigurationError:
            raise
        except _UNAVAILABLE as exc:
            self._refused += 1
            logger.warning("bridge: no stream for %s: %s", connection.url.path, exc)
            return str(exc) or type(exc).__name__

    # -- endpoints ----------------------------------------------------------------------------

    async def event_stream(self, request: Request) -> Response:
        """An endpoint: a ``text/event-stream`` of the subscription's messages (503 when the
        subscription cannot be made)."""
        return _StreamResponse(self, request)

    async def websocket(self, websocket: WebSocket) -> None:
        """A websocket endpoint: one message per subscription message; what the client sends
        is read and ignored. The handshake is refused with 503 when the subscription cannot be
        made; the websocket is closed with 1001 when the subscription ends, 1011 when it
        fails."""
        async with AsyncExitStack() as stack:
            feed = await self._enter(stack, websocket)
            if isinstance(feed, str):
                await websocket.reject(503, feed.encode())
                return
            await websocket.accept()
            encode = self._text
            try:
                with collapse_single_error():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_ignore_until_closed, websocket, nursery.cancel_scope)
                        async for message in feed:
                            await websocket.send(encode(message))
                        nursery.cancel_scope.cancel()
            except WebSocketDisconnect:
                return
            if feed.error is not None:
                await websocket.close(_INTERNAL_ERROR, "the subscription failed")
            else:
                await websocket.close(_GOING_AWAY, "the subscription ended")


class BridgeFull(TrionetError):
    """A bridge has ``max_streams`` streams open; the connection is refused (503)."""


async def _ignore_until_closed(websocket: WebSocket, scope: trio.CancelScope) -> None:
    async for _ in websocket:
        pass
    scope.cancel()


class _StreamResponse(Response):
    """Subscribes, then streams the feed as server-sent events (or answers 503)."""

    def __init__(self, bridge: Bridge[Any], request: Request) -> None:
        super().__init__(b"", status_code=200, media_type="text/event-stream")
        self._bridge = bridge
        self._request = request

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        bridge = self._bridge
        async with AsyncExitStack() as stack:
            feed = await self._bridge._enter(stack, self._request)
            if isinstance(feed, str):
                unavailable = Response.json({"error": f"no event stream: {feed}"},
                                            status_code=503)
                await unavailable.send_to(scope, receive, send)
                return
            events = EventSourceResponse(_Events(feed, bridge._event), ping=bridge.ping,
                                         retry=bridge.retry)
            await events.send_to(scope, receive, send)

