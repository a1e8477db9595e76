"""The bus over Kafka with TLS (issue 23, "TLS everywhere"): ``KafkaConfig(tls=...)`` reaches
the bus's producer, consumers and admin client, against a broker that speaks only TLS."""

from __future__ import annotations

import pytest
import trio
from bus_support import PATIENCE, serving, unique

from trionet.bus import BusMessage, DistributedApplication, KafkaConfig, from_config, parse_url
from trionet.testing import KafkaTLSBroker


def test_the_url_says_tls() -> None:
    config = parse_url("kafka://k1:9093?tls=true")
    assert isinstance(config, KafkaConfig)
    assert config.tls is True
    assert parse_url(config.to_url()) == config
    assert parse_url("kafka://k1:9093").tls is False  # type: ignore[attr-defined]


async def test_a_bus_application_over_tls(kafka_tls_broker: KafkaTLSBroker) -> None:
    info = kafka_tls_broker.info
    topic = f"{unique()}/tls"
    # a consumer group: Tansu's first join takes about session_timeout_ms / 2, so keep that short
    config = KafkaConfig(bootstrap_servers=info.bootstrap_servers, tls=info.tls_options(),
                         group_id=unique("g"), offset_reset="earliest",
                         consumer_config={"session_timeout_ms": 2000,
                                          "heartbeat_interval_ms": 500})
    app = DistributedApplication(config)
    received = trio.Event()
    payloads: list[bytes] = []

    @app.application(topic, name="tls-reader")
    async def reader(message: BusMessage) -> None:
        payloads.append(message.payload)
        received.set()

    handshakes = len(info.handshakes())
    with trio.fail_after(PATIENCE):
        async with serving(app):
            async with from_config(config).create_socket(name="tls-writer") as socket:
                await socket.publish(BusMessage(b"over TLS", topic))
            await received.wait()
            assert kafka_tls_broker.direct_connections() == 0
    assert payloads == [b"over TLS"]
    assert len(info.handshakes()) > handshakes


@pytest.mark.parametrize("tls", [True, False])
def test_asyncapi_marks_a_tls_server(tls: bool) -> None:
    document = DistributedApplication(KafkaConfig(tls=tls)).asyncapi()
    protocols = {server["protocol"] for server in document["servers"].values()}
    assert protocols == {"kafka-secure" if tls else "kafka"}
