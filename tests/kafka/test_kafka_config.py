"""Kafka configuration without a broker: URLs, option checks, headers, serializers, records."""

from __future__ import annotations

import pytest
import trio

from trionet.codecs import JSON
from trionet.errors import ConfigurationError, KafkaError, ProtocolError
from trionet.kafka import (
    KafkaAdmin,
    KafkaConnectionError,
    KafkaConsumer,
    KafkaProducer,
    KafkaRecord,
    KafkaRequester,
    NewTopic,
    TopicPartition,
    UnknownTopicError,
    _engine,
    parse_kafka_url,
)
from trionet.kafka._records import make_decoder, make_encoder, normalize_headers


def test_url_plain_and_options() -> None:
    url = parse_kafka_url("kafka://127.0.0.1:9092?group=billing&acks=1&linger_ms=5&client_id=x")
    assert url.bootstrap_servers == "127.0.0.1:9092"
    assert url.group_id == "billing"
    assert url.options == {"acks": 1, "linger_ms": 5, "client_id": "x"}
    assert url.consumer_options()["group_id"] == "billing"


def test_url_several_brokers_types_and_no_group() -> None:
    url = parse_kafka_url("kafka://a:1, b:2?check_crcs=false&retry_backoff_ms=250&x=1.5")
    assert url.bootstrap_servers == "a:1,b:2"
    assert url.group_id is None
    assert url.options == {"check_crcs": False, "retry_backoff_ms": 250, "x": 1.5}
    assert "group_id" not in url.consumer_options()


def test_url_credentials_and_tls() -> None:
    url = parse_kafka_url("kafka://alice:s%40cret@h:9093?sasl_mechanism=SCRAM-SHA-256")
    assert url.options == {
        "sasl_mechanism": "SCRAM-SHA-256",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s@cret",
    }
    assert parse_kafka_url("kafka+ssl://h:9093").options == {"security_protocol": "SSL"}
    sasl_ssl = parse_kafka_url("kafkas://bob:pw@h:9093").options
    assert sasl_ssl["security_protocol"] == "SASL_SSL"
    assert sasl_ssl["sasl_mechanism"] == "PLAIN"


@pytest.mark.parametrize(
    "bad",
    [
        "mqtt://h:1",
        "kafka://",
        "kafka://host",
        "kafka://h:1/path",
        "kafka://h:1?group=",
        "kafka://h:1?acks=1&acks=2",
        "kafka://:pw@h:1",
    ],
)
def test_url_rejects(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_kafka_url(bad)


def test_unknown_options_are_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigurationError, match="bogus_option"):
        KafkaProducer("h:1", bogus_option=1)
    with pytest.raises(ConfigurationError, match="bogus_option"):
        KafkaConsumer("t", bootstrap_servers="h:1", bogus_option=1)
    with pytest.raises(ConfigurationError, match="bogus_option"):
        KafkaAdmin("h:1", bogus_option=1)
    with pytest.raises(ConfigurationError, match="bogus_option"):
        KafkaProducer.from_url("kafka://h:1?bogus_option=1")


def test_argument_checks() -> None:
    with pytest.raises(ConfigurationError):
        KafkaProducer("")
    with pytest.raises(ConfigurationError):
        KafkaProducer(["h:1", 2])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        KafkaProducer("h:1", max_pending=0)
    with pytest.raises(ConfigurationError):
        KafkaConsumer("t", pattern="t.*", bootstrap_servers="h:1")
    with pytest.raises(ConfigurationError):
        KafkaConsumer("", bootstrap_servers="h:1")
    with pytest.raises(ConfigurationError):
        KafkaConsumer(bootstrap_servers="h:1", partitions=[("t", -1)])
    with pytest.raises(ConfigurationError):
        KafkaConsumer(bootstrap_servers="h:1", poll_interval=0)
    with pytest.raises(ConfigurationError):
        KafkaConsumer(bootstrap_servers="h:1", listener=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        KafkaProducer("h:1", value_serializer="no-such-codec")
    with pytest.raises(ConfigurationError):
        KafkaRequester("h:1", reply_partition=-1)
    with pytest.raises(ConfigurationError):
        NewTopic("t", num_partitions=0)


def test_from_url_builds_clients() -> None:
    consumer = KafkaConsumer.from_url("kafka://h:1?group=g&max_poll_records=7", "topic")
    assert consumer.group_id == "g"
    assert "h:1" in repr(consumer)
    producer = KafkaProducer.from_url("kafka://h:1?group=ignored&acks=1")
    assert "h:1" in repr(producer)
    assert "h:1" in repr(KafkaAdmin.from_url("kafka://h:1"))


def test_headers_are_normalized() -> None:
    assert normalize_headers(None) == []
    assert normalize_headers({"a": "é", "b": b"\x00"}) == [("a", "é".encode()), ("b", b"\x00")]
    assert normalize_headers([("a", bytearray(b"x")), ("a", b"y")]) == [("a", b"x"), ("a", b"y")]
    with pytest.raises(ConfigurationError):
        normalize_headers([("a",)])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        normalize_headers([(1, b"x")])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        normalize_headers({"a": 5})  # type: ignore[dict-item]


def test_serializers() -> None:
    encode = make_encoder("json", "value")
    decode = make_decoder(JSON(), "value")
    assert encode is not None and decode is not None
    assert decode(encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert make_encoder(None, "key") is None
    upper = make_decoder(bytes.upper, "key")
    assert upper is not None and upper(b"x") == b"X"


def test_record_helpers() -> None:
    record = KafkaRecord("t", 2, 7, b"k", b"v", [("h", b"1"), ("h", b"2")], 0, 0)
    assert record.topic_partition == TopicPartition("t", 2)
    assert record.header("h") == b"2"
    assert record.header("missing") is None
    assert TopicPartition("t", 2) == ("t", 2)


def test_error_tree() -> None:
    assert issubclass(KafkaConnectionError, KafkaError)
    assert issubclass(KafkaConnectionError, trio.BrokenResourceError)
    assert issubclass(UnknownTopicError, ProtocolError)
    error = UnknownTopicError("t", 4, detail="it has 3")
    assert (error.topic, error.partition) == ("t", 4)
    assert "partition 4 of 't'" in str(error)


def test_public_names_are_documented_in_the_package() -> None:
    import trionet.kafka as package

    for name in package.__all__:
        obj = getattr(package, name)
        if isinstance(obj, type) and name != "KafkaError":  # KafkaError lives in trionet.errors
            assert obj.__module__ == "trionet.kafka", name


def test_backend_names_the_engine() -> None:
    url = parse_kafka_url("kafka://h:1?backend=kafka-python&group=g&acks=1")
    assert url.backend == "kafka-python"
    assert url.options == {"acks": 1}
    assert url.consumer_options() == {"acks": 1, "backend": "kafka-python", "group_id": "g"}
    assert parse_kafka_url("kafka://h:1").backend is None
    for bad in ("kafka://h:1?backend=", "kafka://h:1?backend=a&backend=b"):
        with pytest.raises(ConfigurationError, match="backend"):
            parse_kafka_url(bad)
    assert "h:1" in repr(KafkaProducer("h:1", backend="kafka-python"))
    assert "h:1" in repr(KafkaConsumer.from_url("kafka://h:1?backend=kafka-python", "t"))


def test_an_unknown_backend_is_refused() -> None:
    for make in (
        lambda: KafkaProducer("h:1", backend="no-such-engine"),
        lambda: KafkaConsumer("t", bootstrap_servers="h:1", backend="no-such-engine"),
        lambda: KafkaAdmin("h:1", backend="no-such-engine"),
        lambda: KafkaRequester("h:1", backend="no-such-engine"),
        lambda: KafkaProducer.from_url("kafka://h:1?backend=no-such-engine"),
    ):
        with pytest.raises(ConfigurationError, match="unknown Kafka backend 'no-such-engine'"):
            make()


def test_a_backend_that_is_not_installed_names_its_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_engine._REGISTRY, "absent",
                        ("trionet.kafka._no_such_engine_module", "absent-extra"))
    with pytest.raises(ConfigurationError,
                       match=r"backend 'absent' is not installed.*trionet\[absent-extra\]"):
        KafkaConsumer("t", bootstrap_servers="h:1", backend="absent")
