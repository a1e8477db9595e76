"""Subscriptions and ``on_message`` handlers: the broker subscriptions behind the router's
routes, ``subscription()`` blocks, and the task that runs the handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import overload

import trio

from .. import tracing as _tracing
from ..errors import ConfigurationError, MQTTError
from . import _tracing as _mqtt_tracing
from ._base import ClientBase, MessageHandler
from ._message import ConnectionState, MQTTMessage, QoS, to_qos
from ._subscription import Subscription, _Box
from ._topics import parse_filter, topic_matches

_log = logging.getLogger("trionet.mqtt")

def _nothing() -> None:
    pass


class Subscribing(ClientBase):
    """Subscriptions and handlers (see :mod:`._base`)."""

    async def subscribe(
        self,
        topic: str,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> QoS:
        """Subscribe to a topic filter; its messages go to the ``on_message`` handlers.

        Waits for the broker's SUBACK. While the client is reconnecting, the subscription is
        made as soon as the connection is back. Subscriptions are restored automatically after a
        reconnect that did not resume the session.

        Args:
            topic: a topic filter: ``+`` and ``#`` wildcards, ``$share/<group>/<filter>``.
            qos: the maximum QoS to receive messages with.
            no_local: MQTT 5: do not receive this client's own publications.
            retain_as_published: MQTT 5: keep the retain flag of forwarded messages.
            retain_handling: MQTT 5: 0 send retained messages on subscribe, 1 only for a new
                subscription, 2 never.

        Returns:
            The QoS the broker granted.

        Raises:
            MQTTSubscribeError: the broker refused (``reason_code`` says why).
            InvalidTopic: the filter is malformed.
            MQTTNotConnected: not connected or reconnecting.
        """
        level = to_qos(qos)
        parse_filter(topic)
        self._check_v5_options(no_local, retain_as_published, retain_handling)
        self._engine_or_fail()
        router = self._router
        if not router.has_handlers and router.messages_box is None:
            # no handler (yet): keep what arrives for client.messages (retained messages come
            # right after the SUBACK, before an aiomqtt-style loop asks for client.messages)
            router.messages_box = self._new_messages_box()
        route = router.route_for(topic)
        route.handler_refs += 1
        ok = False
        try:
            granted = await self._broker_subscribe(route, level, no_local, retain_as_published,
                                                   retain_handling)
            ok = True
        finally:
            if not ok:
                route.handler_refs -= 1
                self._unsubscribe_soon(route)
        return granted

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe a filter given to :meth:`subscribe` and wait for the UNSUBACK.

        ``subscription()`` blocks on the same filter keep receiving (the broker subscription
        stays until the last of them ends).

        Raises:
            InvalidTopic: the filter is malformed.
            MQTTNotConnected: not connected.
        """
        parse_filter(topic)
        engine = self._engine_or_fail()
        route = self._router.routes.get(topic)
        if route is not None:
            route.handler_refs = 0
            if not self._router.drop_if_unused(route):
                await trio.lowlevel.checkpoint()
                return
        if self._state is not ConnectionState.CONNECTED:
            await self._ready(queue_while_reconnecting=True)
        box: _Box[tuple[int, str]] = _Box()
        self._submit(engine.unsubscribe, box, topic)
        await box.wait()

    @asynccontextmanager
    async def subscription(
        self,
        topic: str,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        *,
        max_buffer_size: int | None = None,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the duration of an ``async with`` block and receive the messages::

            async with client.subscription("sensors/+", qos=1) as messages:
                async for message in messages:
                    ...

        The block's :class:`Subscription` has a buffer of *max_buffer_size* messages. When it is
        full, QoS 1/2 messages are acknowledged only once there is room (the broker's in-flight
        window then throttles it), and reading from the broker pauses once the client holds
        ``max_buffered_messages`` in all: a slow consumer costs bounded memory and loses no
        QoS 1/2 message. Leaving the block unsubscribes (unless other blocks or
        :meth:`subscribe` still use the filter) and drops what is still buffered.

        Args:
            topic: a topic filter (wildcards, ``$share/<group>/<filter>``).
            qos: the maximum QoS to receive messages with.
            max_buffer_size: the buffer size (default: the client's
                ``subscription_buffer_size``).
            no_local: MQTT 5: do not receive this client's own publications.
            retain_as_published: MQTT 5: keep the retain flag of forwarded messages.
            retain_handling: MQTT 5: 0 send retained messages on subscribe, 1 only for a new
                subscription, 2 never.

        Raises:
            MQTTSubscribeError: the broker refused the subscription.
        """
        level = to_qos(qos)
        parse_filter(topic)
        self._check_v5_options(no_local, retain_as_published, retain_handling)
        size = max_buffer_size
        if size is None:
            size = self._options.subscription_buffer_size
        if not isinstance(size, int) or size < 1:
            raise ConfigurationError("max_buffer_size must be an int >= 1")
        self._engine_or_fail()
        mailbox = Subscription(self._flow, topic, level, size)
        if self._traced:
            mailbox._traced_by = self._client_id
        route = self._router.route_for(topic)
        route.mailboxes.append(mailbox)
        subscribed = False
        try:
            mailbox.granted_qos = await self._broker_subscribe(
                route, level, no_local, retain_as_published, retain_handling
            )
            subscribed = True
            yield mailbox
        finally:
            route.mailboxes.remove(mailbox)
            mailbox._discard()
            if not subscribed:
                self._unsubscribe_soon(route)  # refused or cancelled: do not wait
            elif (
                self._router.drop_if_unused(route)
                and not self._closing
                and self._state is ConnectionState.CONNECTED
            ):
                box: _Box[tuple[int, str]] = _Box()
                if self._engine is not None and self._submit_quiet(
                    self._engine.unsubscribe, box, topic
                ):
                    # best effort: if the connection or the client goes away meanwhile, the
                    # broker forgets the subscription with the session anyway
                    timeout = self._options.close_timeout
                    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                        try:
                            await box.wait()
                        except MQTTError as exc:
                            _log.debug("unsubscribing %r at the end of its block: %s", topic, exc)

    @property
    def messages(self) -> Subscription:
        """The messages of the filters given to :meth:`subscribe`, for an ``async for`` loop
        (aiomqtt's ``client.messages``)::

            await client.subscribe("sensors/#", qos=1)
            async for message in client.messages:
                print(message.topic, message.payload)

        It is one :class:`Subscription` for the client's life, with the flow control of a
        ``subscription()`` block: a buffer of ``subscription_buffer_size`` messages; when it is
        full, QoS 1/2 messages are acknowledged only once there is room, and reading from the
        broker pauses at ``max_buffered_messages``, so a slow loop costs bounded memory and
        loses no QoS 1/2 message. Iteration ends when the client closes. With
        ``ack="processed"``, acknowledge each message with ``client.messages.ack(message)``.

        Messages that arrive between :meth:`subscribe` and the first use of this property are
        kept (up to the buffer size, acknowledged on arrival whatever ``ack`` says), as long
        as no ``on_message`` handler is registered;
        handlers and this iterator may also be used together (each gets every message).
        """
        router = self._router
        if router.messages_box is None:
            router.messages_box = self._new_messages_box()
        router.messages_claimed = True
        return router.messages_box

    def _new_messages_box(self) -> Subscription:
        box = Subscription(self._flow, "<client.messages>", QoS.EXACTLY_ONCE,
                           self._options.subscription_buffer_size)
        if self._traced:
            box._traced_by = self._client_id
        return box

    @overload
    def on_message(self, handler: MessageHandler, /) -> MessageHandler: ...

    @overload
    def on_message(self, topic_filter: str, /) -> Callable[[MessageHandler], MessageHandler]: ...

    def on_message(
        self, handler_or_filter: MessageHandler | str, /
    ) -> MessageHandler | Callable[[MessageHandler], MessageHandler]:
        """Register an async message handler (usable as a decorator).

        ``@client.on_message`` receives every message of the filters given to
        :meth:`subscribe`; ``@client.on_message("sensors/#")`` only those matching the filter.
        Handlers run in their own tasks (at most ``max_concurrency`` at once), so a slow handler
        never delays acknowledgements or keepalive; an exception is logged with the message
        (or fails the client with ``on_handler_error="raise"``).
        """
        if isinstance(handler_or_filter, str):
            topic_filter = handler_or_filter
            parse_filter(topic_filter)

            def register(handler: MessageHandler) -> MessageHandler:
                if not callable(handler):
                    raise ConfigurationError("an on_message handler must be an async callable")
                self._handlers.append((topic_filter, handler))
                self._router.has_handlers = True
                self._router.drop_unclaimed_messages()
                return handler

            return register
        if not callable(handler_or_filter):
            raise ConfigurationError("an on_message handler must be an async callable")
        self._handlers.append((None, handler_or_filter))
        self._router.has_handlers = True
        self._router.drop_unclaimed_messages()
        return handler_or_filter

    def take_ack(self, message: MQTTMessage) -> Callable[[], None]:
        """In an ``on_message`` handler, with ``ack="processed"``: acknowledge *message* later.

        Returns a function to call once the message is processed (calling it again does
        nothing); the handler returning no longer acknowledges it. Useful when a handler only
        hands the message on (to a queue, another task). With ``ack="received"``, for QoS 0
        messages, or outside a handler, the returned function does nothing.
        """
        delivery = self._router.handler_box._take_tracked(message)
        if delivery is None:
            return _nothing
        done = False

        def ack() -> None:
            nonlocal done
            if not done:
                done = True
                delivery.accepted()

        return ack

    async def _dispatch_handlers(self) -> None:
        limit = trio.Semaphore(self._options.max_concurrency)
        box = self._router.handler_box
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        message = await box.receive()
                    except trio.EndOfChannel:
                        break
                    await limit.acquire()
                    nursery.start_soon(self._run_handlers, message, limit)
        finally:
            self._handlers_done.set()

    async def _run_handlers(self, message: MQTTMessage, limit: trio.Semaphore) -> None:
        failed = False
        span = None
        if _tracing.enabled() and self._traced:  # the handlers run in a CONSUMER span
            span = _mqtt_tracing.received(message, self._client_id, True)
        try:
            for topic_filter, handler in list(self._handlers):
                if topic_filter is not None and not topic_matches(topic_filter, message.topic):
                    continue
                try:
                    await handler(message)
                except Exception as exc:
                    failed = True
                    self._handler_errors += 1
                    if span is not None:
                        span.failed(exc)
                    if self._options.on_handler_error == "raise":
                        raise
                    _log.exception(
                        "MQTT on_message handler %s failed on %r%s",
                        getattr(handler, "__qualname__", handler), message,
                        " (not acknowledged: the broker sends it again on the next connection)"
                        if self._options.ack_processed and message.qos else "",
                    )
            if not failed:
                self._router.handler_box.ack(message)  # (ack="processed"; a no-op otherwise)
        finally:
            limit.release()
            if span is not None:
                span.end()
