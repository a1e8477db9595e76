"""The bus over a broker that wants MQTT 5 enhanced authentication (SCRAM), against the real
mosquitto with trionet's test plugin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import trio

from trionet.bus import BusMessage, BusSocket, DistributedApplication, MqttConfig
from trionet.errors import ConfigurationError
from trionet.mqtt import MQTTAuthError, ScramAuthenticator
from trionet.testing import MosquittoServer

if TYPE_CHECKING:
    import trustme


@pytest.fixture(scope="module")
def auth_broker(tls_ca: trustme.CA) -> Iterator[MosquittoServer]:
    with MosquittoServer(ca=tls_ca, auth_plugin=True) as server:
        yield server


def config(server: MosquittoServer, password: str) -> MqttConfig:
    info = server.info
    assert info.ext_auth_port is not None
    return MqttConfig(
        host=info.host, port=info.ext_auth_port, allow_insecure_auth=True,
        authenticator=lambda: ScramAuthenticator(info.scram_user, password),
    )


async def test_an_application_authenticates_each_socket(auth_broker: MosquittoServer) -> None:
    made = config(auth_broker, auth_broker.info.scram_password)
    app = DistributedApplication(made)

    @app.application("scram/orders")
    async def orders(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, b"ok " + message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        # a second socket of the same provider gets an authenticator of its own
        assert app.default_socket_provider is not None
        async with app.default_socket_provider.create_socket(name="client") as client:
            reply = await client.request(BusMessage(b"1", "scram/orders"), timeout=10)
        assert reply.payload == b"ok 1"
        app.stop()


async def test_a_wrong_password_stops_the_application(auth_broker: MosquittoServer) -> None:
    app = DistributedApplication(config(auth_broker, "wrong"))

    @app.application("scram/never")
    async def never(message: BusMessage) -> None:
        raise AssertionError("not reached")

    with pytest.raises(MQTTAuthError):
        await app.serve()


def test_the_option_is_checked() -> None:
    scram = ScramAuthenticator("u", "p")
    with pytest.raises(ConfigurationError, match="function"):
        MqttConfig(authenticator=scram)  # type: ignore[arg-type]  # one instance for all
    with pytest.raises(ConfigurationError, match="MQTT 5"):
        MqttConfig(version="3.1.1", authenticator=lambda: scram)
