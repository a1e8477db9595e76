"""BusMessage, its envelopes (msgpack and spa_dat JSON) and topic matching: no I/O."""

from __future__ import annotations

import json
import time

import msgpack
import pytest
from hypothesis import given, strategies as st

from trionet.bus import (
    BusMessage,
    EnvelopeError,
    NoResponseTopic,
    SpaMessage,
    TopicFilter,
    check_topic,
    check_topic_filter,
    decode_envelope,
    encode_envelope,
    topic_matches,
)
from trionet.errors import ConfigurationError, ProtocolError

texts = st.text(max_size=20)
messages = st.builds(
    BusMessage,
    payload=st.binary(max_size=300),
    topic=st.text(min_size=1, max_size=30),
    content_type=st.none() | texts,
    client_name=st.none() | texts,
    response_topic=st.none() | texts,
    timestamp=st.integers(min_value=0, max_value=2**40),
    headers=st.dictionaries(texts, texts, max_size=4),
    correlation_id=st.none() | texts,
)


@given(messages, st.sampled_from(["msgpack", "json"]))
def test_envelopes_round_trip_every_message(message: BusMessage, codec: str) -> None:
    data = encode_envelope(message, codec)  # type: ignore[arg-type]
    assert decode_envelope(data) == message


@given(st.binary(max_size=200))
def test_decoding_garbage_raises_only_envelope_errors(data: bytes) -> None:
    try:
        message = decode_envelope(data)
    except EnvelopeError as exc:
        assert exc.fault == "remote"
        assert isinstance(exc, ProtocolError)
    else:
        assert isinstance(message, BusMessage)


def test_timestamp_is_taken_when_the_message_is_made() -> None:
    before = int(time.time())
    message = BusMessage(b"x", "t")
    assert before <= message.timestamp <= int(time.time())
    assert BusMessage(b"x", "t", timestamp=5).timestamp == 5


def test_payload_types() -> None:
    assert BusMessage("héllo", "t").payload == "héllo".encode()
    assert BusMessage(bytearray(b"ab"), "t").payload == b"ab"
    assert BusMessage(memoryview(b"cd"), "t").payload == b"cd"
    assert BusMessage(b'{"a": 1}', "t").json() == {"a": 1}
    assert BusMessage(b"text", "t").text == "text"
    with pytest.raises(TypeError, match="payload"):
        BusMessage(42, "t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topic"):
        BusMessage(b"", None)  # type: ignore[arg-type]
    assert SpaMessage is BusMessage


def test_copy_equality_and_replies() -> None:
    message = BusMessage(b"q", "a/b", response_topic="r/1", correlation_id="c1",
                         headers={"h": "1"})
    copy = message.copy(topic="x")
    assert copy.topic == "x" and copy.payload == b"q" and copy.headers == {"h": "1"}
    copy.headers["h"] = "2"
    assert message.headers == {"h": "1"}
    assert message == message.copy() and message != copy
    assert message != "not a message"
    reply = message.make_reply(b"answer", content_type="text/plain")
    assert (reply.topic, reply.correlation_id, reply.payload) == ("r/1", "c1", b"answer")
    with pytest.raises(NoResponseTopic):
        BusMessage(b"", "t").make_reply(b"")
    assert "correlation_id='c1'" in repr(message)
    assert "..." in repr(BusMessage(b"x" * 100, "t"))
    with pytest.raises(TypeError):
        hash(message)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_message_id_travels_in_the_envelope(codec: str) -> None:
    message = BusMessage(b"x", "t", message_id="m-1")
    decoded = decode_envelope(encode_envelope(message, codec))  # type: ignore[arg-type]
    assert decoded.message_id == "m-1"
    assert message.copy().message_id == "m-1" and "message_id='m-1'" in repr(message)
    assert decoded == BusMessage(b"x", "t", timestamp=message.timestamp)  # not compared
    pascal = json.dumps({"Payload": "x", "Topic": "t", "MessageId": "m-2"}).encode()
    assert decode_envelope(pascal).message_id == "m-2"
    assert decode_envelope(encode_envelope(BusMessage(b"x", "t"))).message_id is None


def test_msgpack_envelope_layout() -> None:
    data = encode_envelope(BusMessage(b"\x00\xff", "t", timestamp=7, correlation_id="c"))
    assert msgpack.unpackb(data) == {
        "payload": b"\x00\xff", "topic": "t", "timestamp": 7, "correlation_id": "c"
    }


def test_json_envelope_is_spa_dat_compatible() -> None:
    message = BusMessage(b"hello", "t/x", content_type="text/plain", response_topic="r",
                         timestamp=1700000000)
    assert json.loads(message.to_json()) == {
        "payload": "hello", "topic": "t/x", "content_type": "text/plain", "client_name": None,
        "response_topic": "r", "timestamp": 1700000000,
    }
    # What spa_dat 0.2 writes (pydantic's model_dump_json), and spa_dat 0.4's PascalCase.
    snake = (b'{"payload":"hi","topic":"a","content_type":null,"client_name":"c",'
             b'"response_topic":null,"timestamp":1}')
    pascal = b'{"Payload":"hi","Topic":"a","ClientName":"c","Timestamp":1,"ClientId":"x"}'
    for data in (snake, pascal, b"  " + snake):
        decoded = decode_envelope(data)
        assert (decoded.payload, decoded.topic, decoded.client_name) == (b"hi", "a", "c")
    assert BusMessage.from_json(snake.decode()) == decode_envelope(snake)


def test_json_envelope_keeps_binary_payloads() -> None:
    message = BusMessage(bytes(range(256)), "t")
    body = json.loads(message.to_json())
    assert body["payload_encoding"] == "base64"
    assert decode_envelope(message.to_json()).payload == bytes(range(256))


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"[1, 2]", b"\x93\x01\x02\x03", b'{"payload": 1, "topic": "t"}',
    b'{"payload": "x"}', b'{"payload": "x", "topic": "t", "timestamp": "now"}',
    b'{"payload": "x", "topic": "t", "timestamp": true}',
    b'{"payload": "x", "topic": "t", "headers": {"a": 1}}',
    b'{"payload": "x", "topic": "t", "content_type": 5}',
    b'{"payload": "!!", "topic": "t", "payload_encoding": "base64"}',
    b'{"payload": "x", "topic": "t", "payload_encoding": "rot13"}',
    msgpack.packb({"payload": "text, not bin", "topic": "t"}),
    msgpack.packb({1: 2}),
])
def test_malformed_envelopes(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(data)


def test_encoding_errors_are_local() -> None:
    with pytest.raises(EnvelopeError) as caught:
        encode_envelope(BusMessage(b"", "t", headers={"n": 1}))  # type: ignore[dict-item]
    assert caught.value.fault == "local"
    with pytest.raises(EnvelopeError):
        encode_envelope(BusMessage(b"", "t"), "xml")  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError):
        BusMessage(b"", "t", headers={"n": 1}).to_json()  # type: ignore[dict-item]


# -- topics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+/c", "a/x/c", True),
    ("+/+", "a/b", True),
    ("+", "a", True),
    ("+", "", True),
    ("a/#", "a", True),
    ("a/#", "a/b/c", True),
    ("a/#", "b", False),
    ("#", "anything/at/all", True),
    ("#", "$SYS/x", False),
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True),
    ("a/+/#", "a/b", True),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
])
def test_topic_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected
    assert TopicFilter(topic_filter).matches(topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+a", "a\x00b"])
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        check_topic_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "#", "a\x00", "x" * 70000])
def test_invalid_topics(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        check_topic(bad)


def test_topic_filter_objects() -> None:
    assert TopicFilter("a/+") == TopicFilter("a/+")
    assert len({TopicFilter("a/+"), TopicFilter("a/+")}) == 1
    assert repr(TopicFilter("a/#")) == "TopicFilter('a/#')"
    with pytest.raises(ConfigurationError):
        check_topic(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        check_topic_filter(5)  # type: ignore[arg-type]
