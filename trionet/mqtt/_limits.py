"""The limits an MQTT 5 broker announces, and the check a PUBLISH must pass (no paho, no I/O).

A PUBLISH that breaks one is refused before it is sent (:exc:`MQTTPublishError` with
``sent=False``): sending it would make the broker close the connection, and the client would
resend it on every reconnect.
"""

from __future__ import annotations

from typing import Any

from ._message import MAX_PACKET_SIZE, BrokerLimits

__all__ = ["limit_violation", "limits_from_connack", "publish_size"]


# -- the broker's limits ------------------------------------------------------------------------


def _varint_size(n: int) -> int:
    return 1 if n < 0x80 else 2 if n < 0x4000 else 3 if n < 0x200000 else 4


def publish_size(
    topic_bytes: int, payload_bytes: int, qos: int, props: Any, v5: bool
) -> int:
    """The size in bytes of a PUBLISH packet (fixed header included), as MQTT counts it."""
    remaining = 2 + topic_bytes + payload_bytes + (2 if qos else 0)
    if v5:
        remaining += 1 if props is None else len(props.pack())
    return 1 + _varint_size(remaining) + remaining


def limits_from_connack(properties: Any, cap: int | None = None) -> BrokerLimits:
    """The limits an MQTT 5 CONNACK announces (absent properties mean "no limit"), with the
    client's own packet size *cap* applied."""
    own = cap or MAX_PACKET_SIZE
    if properties is None:
        return BrokerLimits(max_packet_size=own)
    attrs = properties.__dict__
    return BrokerLimits(
        max_packet_size=min(int(attrs.get("MaximumPacketSize", MAX_PACKET_SIZE)), own),
        receive_maximum=int(attrs.get("ReceiveMaximum", 65535)),
        topic_alias_maximum=int(attrs.get("TopicAliasMaximum", 0)),
        retain_available=bool(attrs.get("RetainAvailable", 1)),
        maximum_qos=int(attrs.get("MaximumQoS", 2)),
    )


def limit_violation(
    limits: BrokerLimits, topic: str, payload: bytes | bytearray, qos: int, retain: bool,
    props: Any, v5: bool,
) -> tuple[int, str] | None:
    """Why the broker would not take this PUBLISH: ``(reason code, reason)``, or None if fine.

    The packet size is computed exactly only when a rough upper bound comes near the limit.
    """
    if retain and not limits.retain_available:
        return 0x9A, "retain not supported (the broker announced Retain Available 0)"
    if qos > limits.maximum_qos:
        return 0x9B, (f"QoS {qos} not supported (the broker announced Maximum QoS "
                      f"{limits.maximum_qos})")
    limit = limits.max_packet_size
    rough = 16 + 4 * len(topic) + len(payload)
    if props is None:
        if rough <= limit:
            return None
    elif limit == MAX_PACKET_SIZE and rough <= limit // 2:
        return None  # (properties are not packed twice for brokers without a limit)
    size = publish_size(len(topic.encode()), len(payload), qos, props, v5)
    if size <= limit:
        return None
    return 0x95, (f"packet too large: the PUBLISH would be {size} bytes, the broker accepts "
                  f"at most {limit} (its Maximum Packet Size)" if limit != MAX_PACKET_SIZE
                  else f"packet too large: the PUBLISH would be {size} bytes, MQTT allows at "
                  f"most {limit}")
