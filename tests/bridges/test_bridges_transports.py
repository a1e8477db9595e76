"""One handler, several transports: the same consumer answers requests over MQTT, Kafka and the
Channel."""

from __future__ import annotations

import pytest
import trio
from bridges_support import unique

from trionet.bridges import on_transports
from trionet.bus import (
    BusMessage,
    BusSocket,
    ChannelSocketProvider,
    DistributedApplication,
    channel_request,
    from_url,
)
from trionet.channel import open_connection
from trionet.errors import ConfigurationError
from trionet.testing import KafkaBroker, MosquittoServer


async def test_one_handler_answers_over_mqtt_kafka_and_the_channel(
    shared_mosquitto: MosquittoServer, kafka_broker: KafkaBroker,
) -> None:
    tag = unique("transports")
    mqtt = f"mqtt://{shared_mosquitto.info.host}:{shared_mosquitto.info.port}?client_id={tag}"
    kafka = (f"kafka://{kafka_broker.info.bootstrap_servers}?offset_reset=earliest"
             f"&client_id={tag}&group={tag}&consumer.session_timeout_ms=6000"
             "&consumer.heartbeat_interval_ms=1000&consumer.metadata_max_age_ms=1000")
    topic = f"{tag}/orders"
    app = DistributedApplication(f"memory://{tag}")
    calls: list[str] = []

    channel = ChannelSocketProvider()  # channel://127.0.0.1:0: a free port

    @on_transports(app, topic, [mqtt, kafka, channel], max_concurrency=2)
    async def orders(message: BusMessage, socket: BusSocket) -> None:
        calls.append(socket.config.scheme)
        await socket.reply(message, b"accepted " + message.payload)

    assert orders.__name__ == "orders"  # registered unchanged
    assert sorted(app.statistics) == ["orders@channel", "orders@kafka", "orders@mqtt"]
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        for url in (mqtt, kafka):
            async with from_url(url).create_socket(name="client") as client:
                reply = await client.request(BusMessage(b"widget", topic), timeout=30)
            assert reply.payload == b"accepted widget"
        async with open_connection(channel.addresses[0]) as connection:
            reply = await channel_request(connection, b"gadget", topic)
        assert reply.payload == b"accepted gadget"
        app.stop()
    assert sorted(calls) == ["channel", "kafka", "mqtt"]
    assert app.statistics["orders@mqtt"].handled == 1
    assert app.statistics["orders@kafka"].handled == 1
    assert app.statistics["orders@channel"].handled == 1


def test_names_and_bad_arguments() -> None:
    app = DistributedApplication("memory://names")

    @on_transports(app, "a/b", ["memory://one", "memory://two", "mqtt://127.0.0.1:1"],
                   name="job")
    async def handler(message: BusMessage) -> None:
        pass

    assert sorted(app.statistics) == ["job@memory", "job@memory-2", "job@mqtt"]
    with pytest.raises(ConfigurationError):
        on_transports(app, "a/b", [])
    with pytest.raises(ConfigurationError):
        on_transports(app, "a/b", "memory://one")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        on_transports(app, "a/b", ["nope://x"])
