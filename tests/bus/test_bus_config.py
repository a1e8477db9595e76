"""Broker URLs, configurations, providers and the factory (no broker needed)."""

from __future__ import annotations

import pytest

from trionet.bus import (
    AckPolicy,
    Backoff,
    ErrorPolicy,
    KafkaConfig,
    MemoryBroker,
    MemoryConfig,
    MemorySocketProvider,
    MqttConfig,
    RestartPolicy,
    SocketProviderFactory,
    from_config,
    from_url,
    parse_url,
)
from trionet.bus._socket import client_label, new_client_id
from trionet.errors import ConfigurationError


def test_memory_urls() -> None:
    assert parse_url("memory://") == MemoryConfig()
    config = parse_url("memory://tests?max_queue=5&overflow=drop&codec=msgpack"
                       "&request_timeout=2.5&client_name=me&topics=a/%2B,b/%23")
    assert config == MemoryConfig(name="tests", max_queue=5, overflow="drop", codec="msgpack",
                                  request_timeout=2.5, client_name="me",
                                  default_subscription_topics=("a/+", "b/#"))
    assert parse_url(config.to_url()) == config
    assert parse_url("memory://x?request_timeout=none").request_timeout is None
    assert parse_url("memory://a/b").name == "a/b"  # type: ignore[attr-defined]


def test_mqtt_urls() -> None:
    config = parse_url("mqtt://alice:s%40cret@broker.example:1884/?qos=2&client_id=svc"
                       "&keepalive=30&clean_start=false&version=3.1.1")
    assert config == MqttConfig(host="broker.example", port=1884, username="alice",
                                password="s@cret", qos=2, client_id="svc", keepalive=30,
                                clean_start=False, version="3.1.1")
    assert "s@cret" not in config.to_url() and "***" in config.to_url()
    tls = parse_url("mqtts://[::1]")
    assert isinstance(tls, MqttConfig)
    assert tls.tls is True and tls.effective_port == 8883 and tls.host == "::1"
    assert tls.to_url() == "mqtts://[::1]:8883"
    assert parse_url("mqtt://h").effective_port == 1883  # type: ignore[attr-defined]
    round_trip = parse_url("mqtt://h:1883?qos=0&client_id=c&v=5")
    assert parse_url(round_trip.to_url()) == round_trip


def test_kafka_urls() -> None:
    config = parse_url("kafka://k1:9092,k2:9093?group=billing&offset_reset=earliest"
                       "&client_id=c&create_topics=no&codec=json")
    assert isinstance(config, KafkaConfig)
    assert config.servers == ["k1:9092", "k2:9093"]
    assert (config.group_id, config.offset_reset, config.client_id) == (
        "billing", "earliest", "c")
    assert config.create_topics is False and config.codec == "json"
    assert parse_url(config.to_url()) == config
    assert KafkaConfig(bootstrap_servers=["a:1", "b:2"]).servers == ["a:1", "b:2"]


@pytest.mark.parametrize(("url", "message"), [
    ("amqp://x", "unsupported"),
    ("memory://?bogus=1", "unknown parameter 'bogus'"),
    ("mqtt://h?qos=3", "qos"),
    ("mqtt://h?qos=high", "not an integer"),
    ("mqtt://h?clean_start=maybe", "not a boolean"),
    ("mqtt://h?version=4", "version"),
    ("mqtt://h:99999", "port"),
    ("mqtt://", "no host"),
    ("mqtt://h?keepalive=-1", "keepalive"),
    ("kafka://", "no bootstrap"),
    ("kafka://h?offset_reset=middle", "offset_reset"),
    ("memory://?codec=xml", "codec"),
    ("memory://?max_queue=0", "max_queue"),
    ("memory://?request_timeout=soon", "not a number"),
    ("memory://?overflow=spill", "overflow"),
    ("memory://?topics=a/%23/b", "#"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_url(url)


def test_other_config_errors() -> None:
    with pytest.raises(ConfigurationError):
        parse_url(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        MemoryConfig(request_timeout=-1)
    with pytest.raises(ConfigurationError):
        KafkaConfig(bootstrap_servers="")
    with pytest.raises(ConfigurationError):
        from_config(object())  # type: ignore[arg-type]


def test_providers_are_immutable() -> None:
    provider = from_url("memory://immutable?topics=a")
    rebuilt = provider.rebuild(["b", "c"], max_queue=7)
    assert provider.config.topics == ("a",)
    assert rebuilt.config.topics == ("b", "c") and rebuilt.config.max_queue == 7
    assert isinstance(rebuilt, MemorySocketProvider) and isinstance(provider, MemorySocketProvider)
    assert rebuilt.broker is provider.broker
    assert from_config(provider) is provider
    assert SocketProviderFactory.from_config("memory://immutable").broker is provider.broker  # type: ignore[attr-defined]
    assert repr(provider) == "<MemorySocketProvider memory://immutable?topics=a>"


def test_memory_brokers_by_name() -> None:
    broker = MemoryBroker("named-for-test")
    assert MemoryBroker.named("named-for-test") is broker
    with pytest.raises(ConfigurationError, match="exists"):
        MemoryBroker("named-for-test")
    assert broker.url == "memory://named-for-test"
    anonymous = MemoryBroker()
    assert from_url(anonymous.url).broker is anonymous  # type: ignore[attr-defined]
    other = MemoryBroker()
    provider = MemorySocketProvider(MemoryConfig(name="ignored"), broker=other)
    assert provider.config.name == other.name
    assert "connection" in repr(other)


def test_policies() -> None:
    backoff = Backoff(initial=1, factor=2, maximum=5, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert 0.9 <= Backoff(initial=1, jitter=0.1).delay(1) <= 1.1
    with pytest.raises(ConfigurationError):
        Backoff(factor=0.5)
    with pytest.raises(ConfigurationError):
        ErrorPolicy("explode")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ErrorPolicy(retries=-1)
    with pytest.raises(ConfigurationError):
        ErrorPolicy("dead_letter")
    with pytest.raises(ConfigurationError):
        RestartPolicy(max_restarts=-1)
    assert ErrorPolicy.coerce("log") == ErrorPolicy("log")
    assert ErrorPolicy.retry(2, then="log").retries == 2
    assert AckPolicy("before") is AckPolicy.BEFORE


def test_client_ids_are_injective_stable_and_compact_for_mqtt_3_1_1() -> None:
    names = ["a/b", "a_b", "a+b", "a#b", "a b", "a-b", "ä", "a_b--" + "x" * 8, "w" * 300, "socket"]
    for compact in (False, True):
        ids = {new_client_id("svc", n, compact=compact) for n in names}
        ids |= {new_client_id("svc", n, ordinal=2, compact=compact) for n in names}
        assert len(ids) == 2 * len(names)  # distinct names (and ordinals) never share an id
        assert new_client_id("svc", "a/b", compact=compact) == new_client_id(
            "svc", "a/b", compact=compact)  # stable across runs
    for n in names:
        compact_id = new_client_id("my-service.eu", n, compact=True)
        assert len(compact_id) <= 23 and compact_id.isascii() and compact_id.isalnum()
        random_id = new_client_id(None, n, compact=True)
        assert len(random_id) <= 23 and random_id.isalnum()
    # Names that are safe keep their readable, pre-existing form (persistent sessions resume).
    assert new_client_id("svc", "worker") == "svc-worker"
    assert new_client_id("svc", "worker", ordinal=2) == "svc-worker-2"
    assert client_label("a_b") == "a_b" and client_label("a/b").startswith("a_b--")
    kafka = from_url("kafka://127.0.0.1:9092?group=g&client_id=svc")
    groups = {kafka.create_socket(name=n).group_id for n in ("a/b", "a_b")}  # type: ignore[attr-defined]
    assert groups == {"g.a_b", f"g.{client_label('a/b')}"}
