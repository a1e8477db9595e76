"""The confluent engine's own guarantees (the shared suite runs on it too, see conftest.py):
librdkafka's native threads end with the client's ``async with``; the engine is picked by name
and by URL; the option names are mapped, checked and passed through."""

from __future__ import annotations

import os

import pytest
from kafka_support import CONSUMER, new_topic

from trionet.errors import ConfigurationError
from trionet.kafka import KafkaAdmin, KafkaConsumer, KafkaProducer, parse_kafka_url


def _librdkafka_threads() -> list[str]:
    """This process's librdkafka threads (native ones, not Python threads: their OS names)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as comm:
                names.append(comm.read().strip())
        except FileNotFoundError:  # the thread just ended
            continue
    return [name for name in names if name.startswith("rdk:")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
async def test_librdkafka_threads_end_with_the_async_with(servers: str) -> None:
    async with new_topic(servers, "native") as topic:
        assert _librdkafka_threads() == []
        async with KafkaProducer(servers, backend="confluent") as producer:
            await producer.send(topic, b"x", partition=0)
            assert _librdkafka_threads()  # its main thread, a thread per broker...
        assert _librdkafka_threads() == []
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 backend="confluent", **CONSUMER) as consumer:
            assert (await consumer.getone()).value == b"x"
            assert _librdkafka_threads()
        assert _librdkafka_threads() == []
        async with KafkaAdmin(servers, backend="confluent") as admin:
            assert topic in await admin.list_topics()
            assert _librdkafka_threads()
        assert _librdkafka_threads() == []


def test_the_engine_is_picked_by_name_and_url() -> None:
    assert parse_kafka_url("kafka://127.0.0.1:9?backend=confluent").backend == "confluent"
    producer = KafkaProducer.from_url("kafka://127.0.0.1:9?backend=confluent&linger_ms=0")
    assert "confluent" in type(producer._engine).__module__
    consumer = KafkaConsumer.from_url("kafka://127.0.0.1:9?backend=confluent", "topic")
    assert "confluent" in type(consumer._engine).__module__


def test_options_are_mapped_checked_and_passed_through() -> None:
    # trionet's names, librdkafka's dotted names: both accepted (nothing connects here)
    KafkaProducer("127.0.0.1:9", backend="confluent", acks=1, linger_ms=2,
                  compression_type="lz4", **{"queue.buffering.max.messages": 1000})
    KafkaConsumer("t", bootstrap_servers="127.0.0.1:9", backend="confluent",
                  max_poll_records=100, **{"fetch.wait.max.ms": 10}, **CONSUMER)
    with pytest.raises(ConfigurationError, match="unknown producer option 'lingerms'"):
        KafkaProducer("127.0.0.1:9", backend="confluent", lingerms=2)
    with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
        KafkaProducer("127.0.0.1:9", backend="confluent",
                      **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                         "sasl.username": "u", "sasl.password": "p"})


def test_a_consumer_fetches_again_soon_after_its_local_queue_was_full() -> None:
    # librdkafka's default (1 s) also delays the first record after a seek or a resume of a
    # consumer whose queue had filled up (measured: 1.05 s); an explicit setting wins.
    consumer = KafkaConsumer("t", bootstrap_servers="127.0.0.1:9", backend="confluent",
                             **CONSUMER)
    assert consumer._config.options["fetch.queue.backoff.ms"] <= 100
    consumer = KafkaConsumer("t", bootstrap_servers="127.0.0.1:9", backend="confluent",
                             **{"fetch.queue.backoff.ms": 500}, **CONSUMER)
    assert consumer._config.options["fetch.queue.backoff.ms"] == 500
