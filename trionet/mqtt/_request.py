"""Request/response over MQTT: ``request()`` and ``reply()`` (pending replies: :mod:`._replies`)."""

from __future__ import annotations

import dataclasses
import logging

from ..errors import ConfigurationError, MQTTError
from ._message import (
    MessageProperties,
    MQTTMessage,
    Payload,
    QoS,
    pack_reply_envelope,
    pack_request_envelope,
    to_payload,
)
from ._publishing import Publishing
from ._topics import validate_topic

_log = logging.getLogger("trionet.mqtt")


class Requesting(Publishing):
    """Request/response (see :mod:`._base`)."""

    def _reply_route_ready(self) -> bool:
        return self._replies.ready

    async def _ensure_reply_route(self) -> None:
        if self._replies.ready:
            return
        async with self._replies.lock:
            if self._reply_route_ready():
                return
            route = self._router.route_for(self._replies.topic)
            route.replies = True
            ok = False
            try:
                await self._broker_subscribe(route, QoS.AT_LEAST_ONCE, False, False, 0)
                ok = True
            finally:
                if not ok:
                    route.replies = False
                    self._unsubscribe_soon(route)
            self._replies.ready = True

    async def request(
        self,
        topic: str,
        payload: Payload = None,
        *,
        qos: QoS | int = QoS.AT_LEAST_ONCE,
        properties: MessageProperties | None = None,
    ) -> MQTTMessage:
        """Publish a request and wait for the reply (request/response over MQTT).

        MQTT 5 uses the response topic and correlation data properties; on MQTT 3.1.1 trionet
        wraps them around the payload (the responder must be a trionet client, which unwraps
        them transparently). All requests of a client share one reply subscription, made by the
        first request. Put a deadline on it yourself::

            with trio.fail_after(5):
                reply = await client.request("rpc/add", b"2 3")

        A reply that arrives after its request gave up is dropped (and counted in
        ``statistics().late_replies``).

        Args:
            topic: where the responder listens.
            payload: the request payload.
            qos: QoS of the request.
            properties: MQTT 5 properties to send along (content type, user properties...).

        Returns:
            The reply message.
        """
        validate_topic(topic)
        data = to_payload(payload)
        await self._ensure_reply_route()
        correlation, box = self._replies.expect()
        try:
            if self._v5:
                props = dataclasses.replace(
                    properties or MessageProperties(),
                    response_topic=self._replies.topic,
                    correlation_data=correlation,
                )
                await self.publish(topic, data, qos, properties=props)
            else:
                if properties is not None:
                    raise ConfigurationError("message properties need MQTT 5 (protocol=5)")
                await self.publish(
                    topic, pack_request_envelope(self._replies.topic, correlation, data), qos
                )
            reply = await box.wait()
        finally:
            self._replies.forget(correlation)
        assert reply is not None
        return reply

    async def reply(
        self,
        request: MQTTMessage,
        payload: Payload = None,
        *,
        qos: QoS | int | None = None,
        properties: MessageProperties | None = None,
    ) -> None:
        """Answer a request received from :meth:`request` (or any MQTT 5 request).

        Args:
            request: the received request message.
            payload: the reply payload.
            qos: QoS of the reply (default: the request's).
            properties: MQTT 5 properties of the reply.

        Raises:
            MQTTError: the message carries no response topic.
        """
        props = request.properties
        if props is None or props.response_topic is None:
            raise MQTTError(
                f"the message on {request.topic!r} has no response topic: it is not a request",
                fault="local",
            )
        level = request.qos if qos is None else qos
        data = to_payload(payload)
        if self._v5:
            out = dataclasses.replace(
                properties or MessageProperties(), correlation_data=props.correlation_data
            )
            await self.publish(props.response_topic, data, level, properties=out)
        else:
            if properties is not None:
                raise ConfigurationError("message properties need MQTT 5 (protocol=5)")
            envelope = pack_reply_envelope(props.correlation_data or b"", data)
            await self.publish(props.response_topic, envelope, level)
