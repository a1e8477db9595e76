"""Tracing of Kafka records (see :mod:`trionet.tracing`): ``PRODUCER`` spans for sends and
``CONSUMER`` spans for the records handed to the application, the W3C trace context in record
headers. Every function here runs only while tracing is on (the callers check
:func:`trionet.tracing.enabled` first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import tracing as _tracing

__all__ = ["received", "received_batch", "send_span", "with_carrier"]

_SYSTEM = "kafka"


def send_span(topic: str, partition: int | None, value: Any,
              count: int = 1) -> _tracing.Span | None:
    """The ``PRODUCER`` span of handing a record (or *count* records) to the engine."""
    extra: dict[str, _tracing.AttributeValue] = {}
    if partition is not None:
        extra["messaging.destination.partition.id"] = str(partition)
    if count != 1:
        extra["messaging.batch.message_count"] = count
    elif value is None:
        extra["messaging.kafka.message.tombstone"] = True
    elif isinstance(value, (bytes, bytearray, memoryview)):
        extra["messaging.message.body.size"] = len(value)
    return _tracing.start_span(
        f"send {topic}", "producer",
        _tracing.messaging_attributes(_SYSTEM, "send", "send", topic, extra))


def with_carrier(headers: list[tuple[str, bytes]], span: _tracing.Span
                 ) -> list[tuple[str, bytes]]:
    """*headers* plus ``traceparent``/``tracestate`` of *span*, unless they already have a
    ``traceparent`` (a context the caller set stays as it is)."""
    for name, _ in headers:
        if name == _tracing.TRACEPARENT:
            return headers
    traceparent, tracestate = span.carrier()
    added = [*headers, (_tracing.TRACEPARENT, traceparent.encode())]
    if tracestate:
        added.append((_tracing.TRACESTATE, tracestate.encode()))
    return added


def _attributes(operation: str, topic: str, group_id: str | None,
                extra: dict[str, _tracing.AttributeValue]) -> dict[str, _tracing.AttributeValue]:
    if group_id is not None:
        extra["messaging.consumer.group.name"] = group_id
    return _tracing.messaging_attributes(_SYSTEM, operation, operation, topic, extra)


def received(record: Any, group_id: str | None) -> None:
    """A ``receive`` span (ended at once) for a record handed to the application; its parent
    is the record's trace context (a new trace without one)."""
    topic, partition, offset = record[0], record[1], record[2]
    span = _tracing.start_span(
        f"receive {topic}", "consumer",
        _attributes("receive", topic, group_id, {
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset}),
        carrier=_tracing.carrier_of(record[5]))
    if span is not None:
        span.end()


def received_batch(records: Sequence[Any], group_id: str | None) -> None:
    """One ``receive`` span (ended at once) for records handed over together (``getmany``),
    linked to each record's trace context."""
    if len(records) == 1:
        received(records[0], group_id)
        return
    topics = {record[0] for record in records}
    topic = next(iter(topics)) if len(topics) == 1 else ""
    attributes = _attributes("receive", topic, group_id,
                             {"messaging.batch.message_count": len(records)})
    if not topic:
        del attributes["messaging.destination.name"]
    span = _tracing.start_span(f"receive {topic}" if topic else "receive", "consumer",
                               attributes,
                               links=[_tracing.carrier_of(record[5]) for record in records])
    if span is not None:
        span.end()
