"""Kafka over TLS against a real broker (issue 23, "TLS everywhere"), on both engines.

The broker is Tansu behind a TLS terminator (``kafka_tls_broker``; ``kafka_mtls_broker`` also
requires a client certificate). It advertises only the TLS port, and each test checks that no
connection of the client reached the broker's plain port. Tansu's quirks (wrong high watermark,
slow first group join) are avoided: one partition, assigned, and one record per batch.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trustme
from kafka_support import unique

from trionet.errors import ConfigurationError
from trionet.kafka import KafkaAdmin, KafkaConnectionError, KafkaConsumer, KafkaProducer
from trionet.testing import KafkaTLSBroker
from trionet.testing._servers import _socket_inodes
from trionet.tls import TLSOptions

#: How long a client may try to bootstrap before it gives up (its own timeout, in ms).
BOOTSTRAP_MS = 1000


async def round_trip(broker: KafkaTLSBroker, tls: TLSOptions | ssl.SSLContext,
                     count: int = 3) -> list[bytes]:
    """Create a topic, produce *count* records and read them back, all with *tls*; check that
    every connection went through the terminator."""
    info = broker.info
    topic = unique("tls")
    handshakes = len(info.handshakes())
    values = [f"secret-{n}".encode() for n in range(count)]
    async with KafkaAdmin(info.bootstrap_servers, tls=tls) as admin:
        await admin.create_topic(topic, num_partitions=1)
    async with KafkaProducer(info.bootstrap_servers, tls=tls) as producer:
        for value in values:  # one record per batch: Tansu's high watermark is right then
            await producer.send(topic, value, partition=0)
        async with KafkaConsumer(bootstrap_servers=info.bootstrap_servers, tls=tls,
                                 partitions=[(topic, 0)], auto_offset_reset="earliest"
                                 ) as consumer:
            received = [(await consumer.getone()).value for _ in values]
            assert broker.direct_connections() == 0  # none of them on the plain port
    assert len(info.handshakes()) > handshakes
    return received


async def test_produce_and_consume_over_tls(kafka_tls_broker: KafkaTLSBroker) -> None:
    info = kafka_tls_broker.info
    with trio.fail_after(60):
        received = await round_trip(kafka_tls_broker, info.tls_options())
    assert received == [b"secret-0", b"secret-1", b"secret-2"]


async def test_a_kafka_ssl_url(kafka_tls_broker: KafkaTLSBroker) -> None:
    # kafka+ssl:// with the CA as a URL option, on each engine
    info = kafka_tls_broker.info
    url = f"kafka+ssl://{info.bootstrap_servers}?ssl_cafile={info.ca_file}"
    topic = unique("tls-url")
    handshakes = len(info.handshakes())
    with trio.fail_after(60):
        async with KafkaAdmin.from_url(url) as admin:
            await admin.create_topic(topic, num_partitions=1)
        async with KafkaProducer.from_url(url) as producer:
            await producer.send(topic, b"via a URL", partition=0)
        async with KafkaConsumer.from_url(url, partitions=[(topic, 0)],
                                          auto_offset_reset="earliest") as consumer:
            assert (await consumer.getone()).value == b"via a URL"
            assert kafka_tls_broker.direct_connections() == 0
    assert len(info.handshakes()) > handshakes


async def test_an_ssl_context(kafka_tls_broker: KafkaTLSBroker, kafka_backend: str) -> None:
    # tls=SSLContext: kafka-python takes the context; librdkafka cannot, and says so
    context = kafka_tls_broker.info.ssl_context()
    if kafka_backend == "confluent":
        with pytest.raises(ConfigurationError, match=r"cannot use an ssl\.SSLContext"):
            KafkaProducer(kafka_tls_broker.info.bootstrap_servers, tls=context)
        return
    with trio.fail_after(60):
        assert len(await round_trip(kafka_tls_broker, context, count=1)) == 1


async def test_untrusted_certificate_fails_cleanly(kafka_tls_broker: KafkaTLSBroker) -> None:
    # tls=True trusts the system CAs only, which did not issue the broker's certificate: each
    # client gives up after its own bootstrap timeout with an error naming the cause. A client
    # without TLS gets no answer from the TLS port either.
    info = kafka_tls_broker.info
    failed = _failures(info.terminator_log.read_text())
    clients: dict[str, Callable[[], AbstractAsyncContextManager[object]]] = {
        "producer": lambda: KafkaProducer(info.bootstrap_servers, tls=True,
                                          bootstrap_timeout_ms=BOOTSTRAP_MS),
        "consumer": lambda: KafkaConsumer("t", bootstrap_servers=info.bootstrap_servers,
                                          tls=True, bootstrap_timeout_ms=BOOTSTRAP_MS),
        "admin": lambda: KafkaAdmin(info.bootstrap_servers, tls=True,
                                    bootstrap_timeout_ms=BOOTSTRAP_MS),
        "plain": lambda: KafkaAdmin(info.bootstrap_servers, bootstrap_timeout_ms=BOOTSTRAP_MS),
    }
    errors: dict[str, BaseException] = {}

    async def attempt(name: str) -> None:
        try:
            async with clients[name]():
                pass
        except KafkaConnectionError as exc:
            errors[name] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for name in clients:
                nursery.start_soon(attempt, name)
    assert sorted(errors) == sorted(clients)
    for name, error in errors.items():
        assert info.bootstrap_servers in str(error)
        if name != "plain":
            assert "certificate verify failed" in str(error)  # names the cause
    # the handshakes themselves failed: the clients refused the certificate (and the plain
    # client's bytes were no TLS)
    assert _failures(info.terminator_log.read_text()) >= failed + len(clients)
    assert kafka_tls_broker.direct_connections() == 0
    # and the failed TLS sockets were closed (kafka-python 3.0 leaked them until the GC ran)
    assert _open_sockets_to(info.port) == 0


@pytest.fixture(scope="module")
def misnamed_broker(tls_ca: trustme.CA) -> Iterator[KafkaTLSBroker]:
    """A TLS broker whose certificate (from the trusted CA) names another host."""
    with KafkaTLSBroker(ca=tls_ca, server_names=("kafka.example.test",)) as broker:
        yield broker


async def test_the_host_name_is_checked(misnamed_broker: KafkaTLSBroker) -> None:
    # the CA is trusted, but the certificate is not for 127.0.0.1: refused
    info = misnamed_broker.info
    with trio.fail_after(30), pytest.raises(KafkaConnectionError) as caught:
        async with KafkaAdmin(info.bootstrap_servers, tls=info.tls_options(),
                              bootstrap_timeout_ms=BOOTSTRAP_MS):
            pass
    assert "certificate verify failed" in str(caught.value)
    assert len(info.handshakes()) == 0


async def test_mutual_tls(kafka_mtls_broker: KafkaTLSBroker) -> None:
    info = kafka_mtls_broker.info
    with trio.fail_after(60):
        received = await round_trip(kafka_mtls_broker, info.tls_options(client_cert=True),
                                    count=1)
    assert received == [b"secret-0"]
    assert all("commonName=trionet-kafka-client" in line for line in info.handshakes())
    # without a client certificate the terminator refuses the handshake, and says so (the
    # TLS 1.3 alert reaches the client with its first read)
    with trio.fail_after(30), pytest.raises(KafkaConnectionError) as caught:
        async with KafkaAdmin(info.bootstrap_servers, tls=info.tls_options(),
                              bootstrap_timeout_ms=BOOTSTRAP_MS):
            pass
    assert "alert certificate required" in str(caught.value)


def _failures(log: str) -> int:
    return sum(line.startswith("tls failed ") for line in log.splitlines())


def _open_sockets_to(port: int) -> int:
    """This process's TCP sockets (any state) whose remote port is *port*."""
    ours = _socket_inodes(os.getpid())
    count = 0
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[2].partition(":")[2], 16) == port and int(fields[9]) in ours:
            count += 1
    return count
