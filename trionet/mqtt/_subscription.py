"""Bounded message buffers on the trio side: subscriptions, the handler queue, connection events.

A :class:`Subscription` is a :class:`trio.abc.ReceiveChannel` with a fixed capacity. When it is
full, a newly routed message waits in a small *overflow* list instead, and (for QoS 1/2) the
client does not acknowledge it until it enters the buffer: the broker's in-flight window then
stops the flow, so memory stays bounded without dropping anything. Every message held anywhere
counts against the client's ``max_buffered_messages``; above it, the client stops reading from
the broker (TCP backpressure) until consumers catch up.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar, final

import trio

from .. import tracing as _tracing
from . import _tracing as _mqtt_tracing
from ._flow import Delivery, FlowControl
from ._message import ConnectionEvent, MQTTMessage, QoS

__all__ = ["ConnectionEvents", "Subscription", "SubscriptionStatistics"]

T = TypeVar("T")


@final
class SubscriptionStatistics:
    """A snapshot of one subscription's buffer (see :meth:`Subscription.statistics`).

    Attributes:
        buffered: messages in the buffer, ready for ``receive()``.
        waiting: messages that arrived while the buffer was full (not yet acknowledged).
        max_buffer_size: the buffer's capacity.
        received: messages taken out with ``receive()`` so far.
    """

    __slots__ = ("buffered", "max_buffer_size", "received", "waiting")

    def __init__(self, buffered: int, waiting: int, max_buffer_size: int, received: int) -> None:
        self.buffered = buffered
        self.waiting = waiting
        self.max_buffer_size = max_buffer_size
        self.received = received

    def __repr__(self) -> str:
        return (
            f"SubscriptionStatistics(buffered={self.buffered}, waiting={self.waiting}, "
            f"max_buffer_size={self.max_buffer_size}, received={self.received})"
        )


@final
class Subscription(trio.abc.ReceiveChannel[MQTTMessage]):
    """The messages of one ``client.subscription(...)`` block, in arrival order.

    Iterate with ``async for message in subscription`` or call :meth:`receive`. Iteration ends
    (:exc:`trio.EndOfChannel`) when the client closes. Made by :meth:`MQTTClient.subscription
    <trionet.mqtt.MQTTClient.subscription>`; not constructed directly.

    Attributes:
        topic_filter: the filter subscribed to (wildcards and ``$share/...`` included).
        qos: the QoS asked for.
        granted_qos: the QoS the broker granted (None until the SUBACK arrived).
    """

    def __init__(
        self, flow: FlowControl | None, topic_filter: str, qos: QoS, max_buffer_size: int
    ) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.granted_qos: QoS | None = None
        self._flow = flow
        self._capacity = max_buffer_size
        self._queue: deque[MQTTMessage] = deque()
        self._overflow: deque[list[MQTTMessage | Delivery | None]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._ended = False
        self._closed = False
        self._received = 0
        # ack="processed": the acknowledgements this subscription still owes, by message
        self._unacked: dict[int, tuple[MQTTMessage, Delivery]] = {}
        # the client id, when messages taken from here get a CONSUMER span (trionet.tracing)
        self._traced_by: str | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.topic_filter!r} qos={int(self.qos)}>"

    # -- the client side ------------------------------------------------------------------------

    def _offer(self, message: MQTTMessage) -> bool:
        """Take a routed message. False: it went to the overflow (acknowledge it later)."""
        if self._ended or self._closed:
            return True
        flow = self._flow
        if flow is not None:
            flow.hold()
        if not self._overflow and len(self._queue) < self._capacity:
            self._queue.append(message)
            if self._lot:
                self._lot.unpark()
            return True
        self._overflow.append([message, None])
        return False

    def _has_room(self) -> bool:
        """Whether a message offered now would go straight into the buffer."""
        return (not self._overflow and len(self._queue) < self._capacity
                and not (self._ended or self._closed))

    def _take_tracked(self, message: MQTTMessage) -> Delivery | None:
        """ack="processed": hand over the acknowledgement owed for *message* (None if none)."""
        entry = self._unacked.pop(id(message), None)
        if entry is None or entry[0] is not message:
            return None
        return entry[1]

    def _set_delivery(self, delivery: Delivery) -> None:
        self._overflow[-1][1] = delivery

    def _track(self, message: MQTTMessage, delivery: Delivery) -> None:
        """ack="processed": *message* is acknowledged once :meth:`ack` is called for it."""
        if not (self._ended or self._closed):
            self._unacked[id(message)] = (message, delivery)

    def _end(self) -> None:
        """No more messages will come: receivers get EndOfChannel once the buffer is empty."""
        self._ended = True
        self._discard_overflow()
        self._lot.unpark_all()

    def _discard_overflow(self) -> None:
        flow = self._flow
        while self._overflow:
            _, delivery = self._overflow.popleft()
            if flow is not None:
                flow.consumed()
            if isinstance(delivery, Delivery):
                delivery.accepted()

    def _discard(self) -> None:
        """Drop everything buffered (the subscription is over); acknowledge what waited.

        With ack="processed", messages not acknowledged with :meth:`ack` stay unacknowledged
        (the broker sends them again on the next connection of a persistent session).
        """
        self._unacked.clear()
        self._end()
        flow = self._flow
        while self._queue:
            self._queue.popleft()
            if flow is not None:
                flow.consumed()

    # -- the consumer side ----------------------------------------------------------------------

    def receive_nowait(self) -> MQTTMessage:
        """Return the next buffered message without waiting.

        Raises:
            trio.WouldBlock: the buffer is empty.
            trio.EndOfChannel: the client has closed and the buffer is empty.
            trio.ClosedResourceError: this subscription was closed with :meth:`aclose`.
        """
        if self._closed:
            raise trio.ClosedResourceError("this subscription was closed")
        queue = self._queue
        if queue:
            message = queue.popleft()
            self._received += 1
            if _tracing.enabled() and self._traced_by is not None:
                _mqtt_tracing.received(message, self._traced_by, False)
            flow = self._flow
            if flow is not None:
                flow.consumed()
            if self._overflow:
                self._refill()
            return message
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> MQTTMessage:
        """Wait for the next message and return it.

        Raises:
            trio.EndOfChannel: the client has closed and the buffer is empty.
            trio.ClosedResourceError: this subscription was closed with :meth:`aclose`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            message = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        while True:
            await self._lot.park()
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                continue

    def _refill(self) -> None:
        queue = self._queue
        overflow = self._overflow
        while overflow and len(queue) < self._capacity:
            message, delivery = overflow.popleft()
            assert isinstance(message, MQTTMessage)
            queue.append(message)
            if isinstance(delivery, Delivery):
                delivery.accepted()

    async def aclose(self) -> None:
        """Stop receiving: buffered messages are dropped and later ones are ignored.

        The broker subscription itself ends when the ``subscription()`` block exits.
        """
        if not self._closed:
            self._discard()
            self._closed = True
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()

    def ack(self, message: MQTTMessage) -> None:
        """Acknowledge a QoS 1/2 message received from this subscription (``ack="processed"``).

        With the client option ``ack="processed"``, the broker gets the PUBACK (QoS 1) or
        PUBCOMP (QoS 2) of a message only once every subscription block (and the ``on_message``
        handlers) it went to is done with it: call this when you have processed it. A message
        never acknowledged is sent again by the broker on the client's next connection (with a
        persistent session), and holds one of the broker's in-flight slots until then.

        Does nothing for QoS 0 messages, messages already acknowledged, and with the default
        ``ack="received"`` (messages are acknowledged on arrival).
        """
        delivery = self._take_tracked(message)
        if delivery is not None:
            delivery.accepted()

    def statistics(self) -> SubscriptionStatistics:
        """Buffer occupancy and counters of this subscription."""
        return SubscriptionStatistics(
            len(self._queue), len(self._overflow), self._capacity, self._received
        )


@final
class ConnectionEvents(trio.abc.ReceiveChannel[ConnectionEvent]):
    """Connection-state changes of one client (see ``client.connection_events()``).

    Keeps the latest *max_buffer_size* events; when a slow reader falls behind, the oldest are
    dropped (the newest state is what matters). Iteration ends when the client closes.
    """

    def __init__(self, max_buffer_size: int) -> None:
        self._events: deque[ConnectionEvent] = deque(maxlen=max_buffer_size)
        self._lot = trio.lowlevel.ParkingLot()
        self._ended = False
        self._closed = False
        self.dropped = 0

    def _push(self, event: ConnectionEvent) -> None:
        if self._ended or self._closed:
            return
        events = self._events
        if events.maxlen is not None and len(events) == events.maxlen:
            self.dropped += 1
        events.append(event)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._ended = True
        self._lot.unpark_all()

    def receive_nowait(self) -> ConnectionEvent:
        """Return the oldest unread event, or raise :exc:`trio.WouldBlock`."""
        if self._closed:
            raise trio.ClosedResourceError("this event stream was closed")
        if self._events:
            return self._events.popleft()
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> ConnectionEvent:
        """Wait for the next event."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            event = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event
        while True:
            await self._lot.park()
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                continue

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._closed = True
        self._events.clear()
        self._lot.unpark_all()
        await trio.lowlevel.checkpoint()


class _Box(Generic[T]):
    """A tiny settable result for one waiting trio task (publish, subscribe, connect, ...).

    ``remaining`` counts how many results are still expected (a ``publish_many`` batch waits
    for all its messages); the first failure wins.
    """

    __slots__ = ("_event", "error", "remaining", "value")

    def __init__(self, expected: int = 1) -> None:
        self._event = trio.Event()
        self.remaining = expected
        self.value: T | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def resolve(self, value: T | None = None, count: int = 1) -> None:
        if self._event.is_set():
            return
        self.value = value
        self.remaining -= count
        if self.remaining <= 0:
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if self._event.is_set():
            return
        self.error = error
        self._event.set()

    async def wait(self) -> T | None:
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.value
