"""Messages, properties, the 3.1.1 request envelope, backoff and URLs: plain data, no broker."""

from __future__ import annotations

import random

import pytest

from trionet.errors import ConfigurationError, MQTTError
from trionet.mqtt import (
    MQTTV5,
    MQTTV311,
    InvalidPayload,
    InvalidTopic,
    MessageProperties,
    MQTTClient,
    MQTTMessage,
    QoS,
    ReconnectPolicy,
    Will,
    parse_mqtt_url,
)
from trionet.mqtt._message import (
    pack_reply_envelope,
    pack_request_envelope,
    unpack_envelope,
)


def test_qos_names_match_mtaio() -> None:
    assert [q.name for q in QoS] == ["AT_MOST_ONCE", "AT_LEAST_ONCE", "EXACTLY_ONCE"]
    assert [int(q) for q in QoS] == [0, 1, 2]


def test_message_dataclass_shape_of_the_seed() -> None:
    message = MQTTMessage("t", "text", QoS.AT_LEAST_ONCE, True, 7)
    assert (message.topic, message.payload, message.qos, message.retain, message.message_id) == (
        "t", b"text", QoS.AT_LEAST_ONCE, True, 7
    )
    assert message.properties is None
    assert message.text == "text"
    assert MQTTMessage("t").payload == b""
    assert MQTTMessage("t", bytearray(b"ab"), 1).qos is QoS.AT_LEAST_ONCE
    assert MQTTMessage("t", b'{"a": 1}').json() == {"a": 1}
    assert MQTTMessage("a/b").matches("a/+")
    assert not MQTTMessage("a/b").matches("b/#")
    with pytest.raises(InvalidPayload):
        MQTTMessage("t", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        MQTTMessage("t", b"", 3)


def test_message_properties_validation() -> None:
    props = MessageProperties(
        content_type="application/json",
        user_properties=[("a", "1"), ("a", "2")],  # type: ignore[arg-type]
        correlation_data=bytearray(b"id"),  # type: ignore[arg-type]
    )
    assert props.user_properties == (("a", "1"), ("a", "2"))
    assert props.correlation_data == b"id"
    assert props.user_property("a") == "1"
    assert props.user_property("b", "none") == "none"
    with pytest.raises(ConfigurationError):
        MessageProperties(payload_format_indicator=2)
    with pytest.raises(ConfigurationError):
        MessageProperties(message_expiry_interval=-1)
    with pytest.raises(ConfigurationError):
        MessageProperties(user_properties=(("a", 1),))  # type: ignore[arg-type]


def test_will_validation() -> None:
    will = Will("status/x", "offline", 1, True)
    assert will.payload == b"offline"
    assert will.qos is QoS.AT_LEAST_ONCE
    with pytest.raises(InvalidTopic):
        Will("status/+")


def test_request_and_reply_envelopes_round_trip() -> None:
    request = pack_request_envelope("replies/me", b"\x00corr", b"payload")
    assert unpack_envelope(request) == ("replies/me", b"\x00corr", b"payload")
    reply = pack_reply_envelope(b"\x00corr", b"")
    assert unpack_envelope(reply) == (None, b"\x00corr", b"")
    assert unpack_envelope(b"ordinary payload") is None
    # truncated or foreign data that merely starts with the magic is left alone
    assert unpack_envelope(request[:20]) is None
    assert unpack_envelope(reply[:-1]) is None
    magic = request[: request.index(b"Q")]
    assert unpack_envelope(magic + b"X" + b"rest") is None
    assert unpack_envelope(magic + b"Q\x00\x05ab") is None


def test_reconnect_policy_backoff_with_jitter() -> None:
    policy = ReconnectPolicy(initial_delay=0.1, max_delay=1.0, multiplier=2.0, jitter=0.0,
                             max_attempts=6)
    assert [round(d, 3) for d in policy.delays()] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittery = ReconnectPolicy(initial_delay=1.0, max_delay=1.0, jitter=0.5)
    rng = random.Random(1)
    samples = [jittery.delay(3, rng) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in samples)
    assert len(set(samples)) > 100  # actually random
    endless = ReconnectPolicy().delays()
    assert len([next(endless) for _ in range(100)]) == 100
    for bad in ({"initial_delay": -1}, {"multiplier": 0.5}, {"jitter": 2}, {"max_attempts": 0}):
        with pytest.raises(ConfigurationError):
            ReconnectPolicy(**bad)


def test_parse_mqtt_urls() -> None:
    host, port, options = parse_mqtt_url("mqtt://user:p%40ss@broker.example:1884/?client_id=me"
                                         "&keepalive=30&protocol=5&clean_start=false")
    assert (host, port) == ("broker.example", 1884)
    assert options == {"transport": "tcp", "username": "user", "password": "p@ss",
                       "client_id": "me", "keepalive": 30, "protocol": MQTTV5,
                       "clean_start": False}
    assert parse_mqtt_url("mqtts://h") == ("h", None, {"transport": "tcp", "tls": True})
    assert parse_mqtt_url("ws://h:9001/mqtt") == (
        "h", 9001, {"transport": "websockets", "websocket_path": "/mqtt"})
    assert parse_mqtt_url("wss://h/")[2]["tls"] is True
    assert parse_mqtt_url("mqtt://h?version=3.1.1")[2]["protocol"] == MQTTV311
    for bad in ("http://h", "mqtt://h:99999", "mqtt://h?keepalive=x", "mqtt://h?protocol=9",
                "mqtt://h?clean_start=maybe", "mqtt://h?colour=blue"):
        with pytest.raises(ConfigurationError):
            parse_mqtt_url(bad)


@pytest.mark.parametrize(
    "options",
    [
        {"protocol": 3},
        {"transport": "udp"},
        {"keepalive": -1},
        {"session_expiry": 10},  # MQTT 5 only
        {"receive_maximum": 10},  # MQTT 5 only
        {"max_inflight": 0},
        {"max_inflight": 70000},
        {"max_concurrency": 0},
        {"subscription_buffer_size": 0},
        {"on_handler_error": "ignore"},
        {"connect_timeout": 0},
        {"password": "no user"},
        {"tls": "yes"},
        {"reconnect": "always"},
        {"client_id": "", "clean_start": False},
        {"clean_start": False},  # a random id would make the session unreachable
        {"client_id": 7},
        {"will": Will("w", properties=MessageProperties(content_type="x"))},
        {"reply_topic": "replies/#"},
    ],
)
def test_client_option_validation(options: dict[str, object]) -> None:
    with pytest.raises((ConfigurationError, InvalidTopic)):
        MQTTClient(**options)  # type: ignore[arg-type]


async def test_client_outside_async_with_is_a_clear_error() -> None:
    client = MQTTClient()
    with pytest.raises(MQTTError, match="async with client"):
        await client.connect("127.0.0.1", 1)
    with pytest.raises(MQTTError, match="async with client"):
        await client.publish("t", b"x")
    with pytest.raises(MQTTError, match="async with client"):
        await client.subscribe("t")
