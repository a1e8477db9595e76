"""Publishing: ``publish()`` and ``publish_many()``, with the broker's limits checked first."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import trio

from .. import metrics as _metrics, tracing as _tracing
from ..errors import ConfigurationError, MQTTError
from . import _tracing as _mqtt_tracing
from ._base import ClientBase, load_paho
from ._errors import MQTTPublishError
from ._limits import limit_violation
from ._message import (
    ConnectionState,
    MessageProperties,
    MQTTMessage,
    Payload,
    QoS,
    to_payload,
    to_qos,
)
from ._subscription import _Box
from ._topics import validate_topic

_BATCH = 256
_BATCHES_IN_FLIGHT = 4

_log = logging.getLogger("trionet.mqtt")


class Publishing(ClientBase):
    """Publishing (see :mod:`._base`)."""

    def _paho_props(self, properties: MessageProperties | None) -> Any:
        if properties is None:
            return None
        if not self._v5:
            raise ConfigurationError("message properties need MQTT 5 (MQTTClient(protocol=5))")
        return load_paho().publish_properties(properties)

    async def publish(
        self,
        topic: str,
        payload: Payload = None,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        retain: bool = False,
        *,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish a message and wait until its QoS handshake is complete.

        QoS 0 returns once the message is written to the socket (or, while the network thread
        is busy, queued for it); QoS 1 returns on PUBACK, QoS 2 on PUBCOMP. While the client is
        reconnecting, QoS 1/2 messages are queued and sent (again) on the new connection; QoS 0
        waits for it. Cancelling a QoS 1/2 publish stops the wait, not the delivery.

        Args:
            topic: the topic name (no wildcards).
            payload: bytes, or text (UTF-8 encoded), or None for an empty payload.
            qos: the :class:`QoS` level.
            retain: ask the broker to keep this as the topic's retained message.
            properties: MQTT 5 :class:`MessageProperties`.

        Raises:
            MQTTNotConnected: not connected (and not reconnecting), or the connection was given
                up while waiting.
            MQTTPublishError: an MQTT 5 broker refused the message (``reason_code``), or the
                message breaks a limit the broker announced (:attr:`broker_limits`: Maximum
                Packet Size, Retain Available, Maximum QoS); such a message is never sent
                (``sent=False``).
            InvalidTopic: the topic is not a valid topic name.
        """
        validate_topic(topic)
        data = payload if type(payload) is bytes else to_payload(payload)
        level = qos if type(qos) is QoS else to_qos(qos)
        span = error = None
        if _tracing.enabled() and self._traced:  # a PRODUCER span (trionet.tracing)
            span = _mqtt_tracing.publish_span(topic, self._client_id, len(data))
            if span is not None and self._v5:
                properties = _mqtt_tracing.with_carrier(properties, span.carrier())
        try:
            props = self._paho_props(properties)
            engine = self._engine_or_fail()
            violation = limit_violation(self._limits, topic, data, level, retain, props, self._v5)
            if violation is not None:
                raise MQTTPublishError(topic, violation[0], violation[1], sent=False)
            if _metrics.sinks:
                _metrics.message("mqtt", "out")
            if level == 0:
                if self._state is not ConnectionState.CONNECTED:
                    await self._ready(queue_while_reconnecting=False)
                await trio.lowlevel.checkpoint_if_cancelled()
                # Written to the socket right here when the network thread is idle (see
                # ThreadDriver.try_direct); otherwise queued for it, under a credit.
                driver = self._driver
                if driver is not None and driver.try_direct(
                    engine.publish0, topic, data, retain, props, False
                ):
                    self._published += 1
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return
                try:
                    self._qos0_credit.acquire_nowait()
                except trio.WouldBlock:
                    await self._qos0_credit.acquire()  # the network thread is behind: wait
                else:
                    # hand the message over first, then let other tasks run
                    self._submit(engine.publish0, topic, data, retain, props)
                    self._published += 1
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return
                self._submit(engine.publish0, topic, data, retain, props)
                self._published += 1
                return
            if self._state is not ConnectionState.CONNECTED:
                await self._ready(queue_while_reconnecting=True)
            box: _Box[None] = _Box()
            driver = self._driver
            if driver is None or not driver.try_direct(
                engine.publish, topic, data, int(level), retain, props, box
            ):
                self._submit(engine.publish, topic, data, int(level), retain, props, box)
            await box.wait()
        except BaseException as exc:
            error = exc
            raise
        finally:
            if span is not None:
                _tracing.end_span(span, error)

    async def publish_many(
        self,
        messages: Iterable[MQTTMessage | tuple[str, Payload]],
        *,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        retain: bool = False,
    ) -> int:
        """Publish many messages, pipelined, and wait until all have completed their handshake.

        Args:
            messages: :class:`MQTTMessage` objects (each with its own QoS, retain flag and
                properties), or ``(topic, payload)`` pairs that use *qos* and *retain*.
            qos: QoS of the ``(topic, payload)`` pairs.
            retain: retain flag of the ``(topic, payload)`` pairs.

        Returns:
            The number of messages published.

        Raises:
            The same errors as :meth:`publish`; the first failure is raised once every message
            already handed over has completed. An invalid topic or a message that breaks one
            of the :attr:`broker_limits` raises as soon as the iteration reaches it; the
            messages from its batch of 256 on are not sent.
        """
        default_qos = int(to_qos(qos))
        engine = self._engine_or_fail()
        span = None
        carrier = None
        if _tracing.enabled() and self._traced:  # one PRODUCER span for the batch
            span = _mqtt_tracing.publish_span(None, self._client_id, None)
            if span is not None and self._v5:
                carrier = span.carrier()
        batch: list[tuple[str, bytes, int, bool, Any]] = []
        boxes: deque[_Box[None]] = deque()
        count = 0
        first_error: BaseException | None = None

        async def settle(limit: int) -> None:
            nonlocal first_error
            while len(boxes) > limit:
                try:
                    await boxes.popleft().wait()
                except MQTTError as exc:
                    if first_error is None:
                        first_error = exc

        async def send() -> None:
            nonlocal batch
            if self._state is not ConnectionState.CONNECTED:
                # QoS 1/2 messages are queued while reconnecting (and sent on the new
                # connection); a batch with QoS 0 messages waits for the connection.
                await self._ready(queue_while_reconnecting=all(item[2] for item in batch))
            box: _Box[None] = _Box(len(batch))
            self._submit(engine.publish_batch, batch, box)
            _metrics.message("mqtt", "out", len(batch))
            boxes.append(box)
            batch = []
            await settle(_BATCHES_IN_FLIGHT)

        try:
            for item in messages:
                if isinstance(item, MQTTMessage):
                    validate_topic(item.topic)
                    properties = item.properties
                    if carrier is not None:
                        properties = _mqtt_tracing.with_carrier(properties, carrier)
                    entry = (item.topic, item.payload, int(item.qos), item.retain,
                             self._paho_props(properties))
                else:
                    topic, payload = item
                    validate_topic(topic)
                    entry = (topic, to_payload(payload), default_qos, retain,
                             None if carrier is None
                             else self._paho_props(_mqtt_tracing.with_carrier(None, carrier)))
                violation = limit_violation(self._limits, *entry, self._v5)
                if violation is not None:
                    raise MQTTPublishError(entry[0], violation[0], violation[1], sent=False)
                batch.append(entry)
                count += 1
                if len(batch) >= _BATCH:
                    await send()
            if batch:
                await send()
            await settle(0)
            if first_error is not None:
                raise first_error
        except BaseException as exc:
            if span is not None:
                _tracing.end_span(span, exc, count)
            raise
        if span is not None:
            _tracing.end_span(span, None, count)
        return count
