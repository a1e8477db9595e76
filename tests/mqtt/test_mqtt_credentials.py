"""An MQTT password never leaves over a connection without TLS unless the caller opted in by
name (issue: MQTTClient sent CONNECT with the password in clear to any plain listener)."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from mqtt_helpers import TEST_DEADLINE, unique

from trionet.bus import DistributedApplication
from trionet.errors import ConfigurationError
from trionet.mqtt import MQTTClient, open_mqtt_client
from trionet.testing import MosquittoServer

SECRET = "pa55-w0rd-never-in-clear"


async def _recording_listener(nursery: trio.Nursery, received: list[bytes]) -> int:
    async def record(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            received.append(chunk)

    [listener] = await nursery.start(partial(trio.serve_tcp, record, 0, host="127.0.0.1"))
    return int(listener.socket.getsockname()[1])


@pytest.mark.parametrize("backend", ["thread", "trio"])
async def test_a_password_without_tls_is_refused_before_anything_is_sent(backend: str) -> None:
    received: list[bytes] = []
    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await _recording_listener(nursery, received)
            async with MQTTClient(username="alice", password=SECRET,
                                  backend=backend) as client:  # type: ignore[arg-type]
                with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
                    await client.connect("127.0.0.1", port)
                # connect(username=, password=) (mtaio's signature) is checked the same way
                with pytest.raises(ConfigurationError, match="without TLS"):
                    await client.connect("127.0.0.1", port, username="bob", password=SECRET)
            with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
                async with open_mqtt_client(f"mqtt://alice:{SECRET}@127.0.0.1:{port}"):
                    pass  # pragma: no cover
            await trio.sleep(0.2)  # anything sent would have arrived by now
            nursery.cancel_scope.cancel()
    assert received == []


async def test_the_bus_refuses_too() -> None:
    app = DistributedApplication(f"mqtt://alice:{SECRET}@127.0.0.1:9")

    @app.application("t")
    async def handler(message: object) -> None:  # pragma: no cover
        pass

    with trio.fail_after(TEST_DEADLINE), pytest.raises(ConfigurationError,
                                                       match="allow_insecure_auth"):
        await app.start_async(handle_signals=False)


async def test_opting_in_and_tls_work(mosquitto: MosquittoServer) -> None:
    info = mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(username=info.username, password=info.password,
                              allow_insecure_auth=True) as client:
            await client.connect(info.host, info.auth_port)
            await client.publish(unique("creds"), "in clear, by choice", qos=1)
        # over TLS the password may go: the check passes and the broker answers
        async with MQTTClient(username=info.username, password=info.password,
                              tls=info.ssl_context()) as client:
            await client.connect(info.host, info.tls_port)
            await client.publish(unique("creds"), "encrypted", qos=1)
    with pytest.raises(ConfigurationError, match="True or False"):
        MQTTClient(allow_insecure_auth="yes")  # type: ignore[arg-type]
