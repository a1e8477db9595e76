"""Tracing of MQTT messages (see :mod:`trionet.tracing`): ``PRODUCER`` spans for publishes and
``CONSUMER`` spans for deliveries, the W3C trace context in MQTT 5 user properties.

MQTT 3.1.1 has no header slot: its messages get spans, and no context travels with them.
Every function here runs only while tracing is on (the callers check
:func:`trionet.tracing.enabled` first).
"""

from __future__ import annotations

import dataclasses

from .. import tracing as _tracing
from ._message import MessageProperties, MQTTMessage

__all__ = ["publish_span", "received", "with_carrier"]

_SYSTEM = "mqtt"


def publish_span(topic: str | None, client_id: str, size: int | None,
                 count: int = 1) -> _tracing.Span | None:
    """The ``PRODUCER`` span of a publish (*topic* ``None``: a batch to several topics)."""
    extra: dict[str, _tracing.AttributeValue] = {}
    if client_id:
        extra["messaging.client.id"] = client_id
    if size is not None:
        extra["messaging.message.body.size"] = size
    if count != 1:
        extra["messaging.batch.message_count"] = count
    attributes = _tracing.messaging_attributes(_SYSTEM, "publish", "send", topic or "", extra)
    if topic is None:
        del attributes["messaging.destination.name"]
    return _tracing.start_span(f"publish {topic}" if topic else "publish", "producer",
                               attributes)


def with_carrier(properties: MessageProperties | None,
                 carrier: tuple[str, str | None]) -> MessageProperties:
    """*properties* plus ``traceparent``/``tracestate`` user properties, unless they already
    have a ``traceparent`` (a context the caller set stays as it is)."""
    if properties is None:
        properties = MessageProperties()
    elif properties.user_property(_tracing.TRACEPARENT) is not None:
        return properties
    traceparent, tracestate = carrier
    added: tuple[tuple[str, str], ...] = ((_tracing.TRACEPARENT, traceparent),)
    if tracestate:
        added += ((_tracing.TRACESTATE, tracestate),)
    return dataclasses.replace(properties, user_properties=properties.user_properties + added)


def received(message: MQTTMessage, client_id: str, process: bool) -> _tracing.Span | None:
    """The ``CONSUMER`` span of a message handed to the application: ``receive`` (ended at
    once) when it takes it from a subscription, ``process`` (current, ended by the caller)
    around the ``on_message`` handlers. Its parent is the message's trace context (MQTT 5
    user properties; a new trace without one)."""
    props = message.properties
    carrier = (_tracing.carrier_of(props.user_properties) if props is not None
               else (None, None))
    operation = "process" if process else "receive"
    extra: dict[str, _tracing.AttributeValue] = {
        "messaging.message.body.size": len(message.payload)}
    if client_id:
        extra["messaging.client.id"] = client_id
    topic = message.topic
    span = _tracing.start_span(
        f"{operation} {topic}", "consumer",
        _tracing.messaging_attributes(_SYSTEM, operation, operation, topic, extra),
        carrier=carrier, current=process)
    if span is not None and not process:
        span.end()
        return None
    return span
