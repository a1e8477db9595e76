"""Subscription routing: which local consumers get a received message (synchronous, no I/O).

One :class:`Route` per broker subscription (one topic filter) lists its consumers:
``subscription()`` blocks (their :class:`~trionet.mqtt.Subscription` buffers), ``subscribe()``
for the ``on_message`` handlers (a reference count), and the reply topic of ``request()``. The
:class:`Router` finds the routes of a message (by MQTT 5 subscription identifier when the broker
sent some, else by walking a :class:`~trionet.mqtt.TopicMatcher`), offers the message to their
buffers and settles its acknowledgement through :class:`~trionet.mqtt._flow.FlowControl`.

It runs on the trio thread inside the client's event handling, and can be driven without a
broker or a socket (``tests/mqtt/test_mqtt_router.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from .. import metrics as _metrics
from .._topics import filter_matcher
from ._events import AckToken
from ._flow import Delivery, FlowControl
from ._message import MQTTMessage, QoS
from ._subscription import Subscription
from ._topics import TopicMatcher, parse_filter

__all__ = ["Route", "Router", "subscription_identifier"]

_MAX_SUB_ID = 268_435_455  # MQTT 5 §3.8.2.1.2: a variable byte integer, 1 to 268,435,455


def subscription_identifier(topic_filter: str) -> int:
    """The MQTT 5 subscription identifier trionet gives *topic_filter* (1 to 268,435,455).

    Derived from the filter alone (BLAKE2b), so the same filter gets the same identifier in
    every run: a client that resumes a persistent session does not hand an identifier the
    broker still uses for another filter to a new one (except by a 1 in 2^28 chance, which the
    topic check in the routing makes harmless).
    """
    digest = hashlib.blake2b(topic_filter.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _MAX_SUB_ID + 1


class Route:
    """One broker subscription (one topic filter) and the local consumers of its messages."""

    __slots__ = (
        "handler_refs",
        "mailboxes",
        "matches",
        "no_local",
        "qos",
        "replies",
        "retain_as_published",
        "retain_handling",
        "sub_id",
        "topic_filter",
    )

    def __init__(self, topic_filter: str, sub_id: int | None) -> None:
        self.topic_filter = topic_filter
        self.sub_id = sub_id
        self.qos = QoS.AT_MOST_ONCE
        self.mailboxes: list[Subscription] = []
        self.handler_refs = 0
        self.replies = False
        self.no_local = False
        self.retain_as_published = False
        self.retain_handling = 0
        #: whether a topic name matches this route's filter
        self.matches: Callable[[str], bool] = filter_matcher(topic_filter)

    def unused(self) -> bool:
        return not self.mailboxes and self.handler_refs == 0 and not self.replies


class Router:
    """The routes of one client and the routing of received messages (module docstring).

    Args:
        flow: the client's flow control (buffer accounting and acknowledgements).
        handler_box: the buffer of the ``on_message`` handlers.
        v5: MQTT 5 (routes get subscription identifiers).
        ack_processed: ``ack="processed"``: acknowledge once every consumer is done.
        on_reply: receives the messages of reply routes.
    """

    def __init__(
        self,
        flow: FlowControl,
        handler_box: Subscription,
        *,
        v5: bool,
        ack_processed: bool,
        on_reply: Callable[[MQTTMessage], None],
    ) -> None:
        self.flow = flow
        self.handler_box = handler_box
        self.v5 = v5
        self.ack_processed = ack_processed
        self.on_reply = on_reply
        #: whether ``on_message`` handlers are registered
        self.has_handlers = False
        #: the buffer of ``client.messages`` (the messages of ``subscribe()`` filters), once a
        #: ``subscribe()`` without handlers or ``client.messages`` made it
        self.messages_box: Subscription | None = None
        #: whether ``client.messages`` was asked for; before that, the box only takes what it
        #: has room for (nobody may ever read it), and handlers replace it
        self.messages_claimed = False
        #: set when the client closes: messages are no longer routed (nor acknowledged)
        self.closing = False
        self.routes: dict[str, Route] = {}
        self._by_id: dict[int, Route] = {}
        self._matcher: TopicMatcher[Route] = TopicMatcher()
        self.received = 0
        self.unrouted = 0

    # -- routes ---------------------------------------------------------------------------------

    def route_for(self, topic_filter: str) -> Route:
        """The route of *topic_filter*, made (with its identifier) if there is none."""
        route = self.routes.get(topic_filter)
        if route is None:
            parse_filter(topic_filter)
            sub_id = None
            if self.v5:
                sub_id = subscription_identifier(topic_filter)
                while sub_id in self._by_id:  # another filter of ours has it
                    sub_id = sub_id % _MAX_SUB_ID + 1
            route = Route(topic_filter, sub_id)
            self.routes[topic_filter] = route
            if sub_id is not None:
                self._by_id[sub_id] = route
            self._matcher.add(topic_filter, route)
        return route

    def drop_if_unused(self, route: Route) -> bool:
        """Forget *route* if nothing uses it any more; True if it was dropped."""
        if not route.unused() or self.routes.get(route.topic_filter) is not route:
            return False
        del self.routes[route.topic_filter]
        if route.sub_id is not None:
            self._by_id.pop(route.sub_id, None)
        self._matcher.remove(route.topic_filter, route)
        return True

    def drop_unclaimed_messages(self) -> None:
        """``on_message`` handlers were registered before anyone asked for
        ``client.messages``: the handlers get the messages; what the box held is dropped."""
        box = self.messages_box
        if box is not None and not self.messages_claimed:
            self.messages_box = None
            box._discard()

    def end_all(self) -> None:
        """The client closed: every buffer ends (receivers get EndOfChannel once empty)."""
        self.handler_box._end()
        if self.messages_box is not None:
            self.messages_box._end()
        for route in self.routes.values():
            for mailbox in route.mailboxes:
                mailbox._end()

    # -- routing --------------------------------------------------------------------------------

    def routes_of(self, message: MQTTMessage) -> list[Route]:
        """The routes *message* belongs to."""
        props = message.properties
        if props is not None and props.subscription_identifiers:
            # Only our subscriptions whose filter matches the topic: an identifier may also
            # belong to a subscription of an earlier run's session (a persistent session
            # keeps its subscriptions), whose messages must not reach an unrelated filter.
            by_id = self._by_id
            topic = message.topic
            routes = []
            for sub_id in props.subscription_identifiers:
                route = by_id.get(sub_id)
                if route is not None and route.matches(topic):
                    routes.append(route)
            return routes
        return list(self._matcher.match(message.topic))

    def route(self, message: MQTTMessage, token: AckToken | None) -> None:
        """Offer a received message to its consumers and settle its acknowledgement."""
        self.received += 1
        if _metrics.sinks:
            _metrics.message("mqtt", "in")
        if self.closing:
            return  # not acknowledged: a persistent session gets it again
        routes = self.routes_of(message)
        targets: list[Subscription] = []
        to_handlers = False
        replies = False
        for route in routes:
            if route.replies:
                replies = True
                self.on_reply(message)
                continue
            targets.extend(route.mailboxes)
            if route.handler_refs:
                to_handlers = True
        if not routes and (self.has_handlers or self.messages_claimed):
            to_handlers = True  # e.g. queued for a persistent session from an earlier run
        kept = False
        if to_handlers:
            if self.has_handlers:
                targets.append(self.handler_box)
            box = self.messages_box
            if box is not None:
                if self.messages_claimed:
                    targets.append(box)
                elif box._has_room():
                    # kept for a client.messages loop that may never come: no flow control
                    # and no acknowledgement waits for it
                    kept = box._offer(message)
        flow = self.flow
        if not targets:
            if not replies and not kept:
                self.unrouted += 1
            if token is not None:
                flow.ack(token)
            return
        waiting: list[Subscription] | None = None
        for mailbox in targets:
            if not mailbox._offer(message):
                if waiting is None:
                    waiting = []
                waiting.append(mailbox)
        if token is None:
            return
        if self.ack_processed:
            # acknowledged once every target is done with it (Subscription.ack)
            delivery = Delivery(flow, token, len(targets))
            for mailbox in targets:
                mailbox._track(message, delivery)
        elif waiting is None:
            flow.ack(token)
        else:
            delivery = Delivery(flow, token, len(waiting))
            for mailbox in waiting:
                mailbox._set_delivery(delivery)
