"""MQTT 5 enhanced authentication (AUTH packets) against a real mosquitto with trionet's test
plugin (trionet/testing/mosquitto_auth_plugin.c: the server side of SCRAM-SHA-256/512, and
TRIONET-TEST, which misbehaves on request), plus the corner cases mosquitto cannot produce
(a broker that never finishes, one that ignores the method) from the scripted broker."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from mqtt_helpers import TEST_DEADLINE, unique
from mqtt_scripted_broker import Packet, Session, packet, serve_script

from trionet.errors import ConfigurationError, MQTTConnectError, MQTTTimeout
from trionet.mqtt import (
    MAX_AUTH_DATA,
    MAX_AUTH_ROUNDS,
    Authenticator,
    ConnectionEvents,
    ConnectionState,
    MQTTAuthError,
    MQTTClient,
    ScramAuthenticator,
)
from trionet.mqtt._auth import encode_auth
from trionet.testing import MosquittoInfo, MosquittoServer

if TYPE_CHECKING:
    import trustme

BACKENDS = ["thread", "trio"]
AUTH_KIND = 15  # the AUTH packet type
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "mqtt_scram.py"


@pytest.fixture(scope="module")
def auth_broker(tls_ca: trustme.CA) -> Iterator[MosquittoServer]:
    """One mosquitto with the enhanced-authentication plugin for the module's tests."""
    with MosquittoServer(ca=tls_ca, auth_plugin=True) as server:
        yield server


class Scripted:
    """A TRIONET-TEST authenticator: its first data asks the plugin for a behaviour (the
    *firsts* in turn, one per exchange; the last one repeats); it answers every round."""

    method = "TRIONET-TEST"

    def __init__(self, *firsts: bytes) -> None:
        self.firsts = list(firsts)
        self.starts = 0
        self.steps: list[bytes | None] = []
        self.finished: list[bytes | None] = []

    def start(self) -> bytes:
        first = self.firsts[min(self.starts, len(self.firsts) - 1)]
        self.starts += 1
        return first

    def step(self, server_data: bytes | None) -> bytes:
        self.steps.append(server_data)
        return b"ok"

    def finish(self, server_data: bytes | None) -> None:
        self.finished.append(server_data)


class CountingScram(ScramAuthenticator):
    """SCRAM, counting its exchanges (started, and completed with the broker's proof)."""

    starts = 0
    verified = 0

    def start(self) -> bytes:
        self.starts += 1
        return super().start()

    def finish(self, server_data: bytes | None) -> None:
        super().finish(server_data)
        self.verified += 1


class GarbageScram(ScramAuthenticator):
    """SCRAM whose broker (TRIONET-TEST "reply HEX") answers the client-first with *garbage*:
    the real ScramAuthenticator.step gets the broker's bytes."""

    method = "TRIONET-TEST"  # type: ignore[assignment]

    def __init__(self, garbage: bytes) -> None:
        super().__init__("user", "pencil")
        self.garbage = garbage

    def start(self) -> bytes:
        super().start()
        return b"reply " + self.garbage.hex().encode()


async def _reconnected(events: ConnectionEvents) -> None:
    """Wait until the connection is lost and back (*events* opened before connecting)."""
    seen = []
    async for event in events:
        seen.append(event.state)
        if event.state is ConnectionState.CONNECTED and ConnectionState.RECONNECTING in seen:
            return
    raise AssertionError(f"the client closed without reconnecting: {seen}")


def client_for(info: MosquittoInfo, authenticator: Authenticator, backend: str,
               **options: object) -> MQTTClient:
    return MQTTClient(protocol=5, authenticator=authenticator, allow_insecure_auth=True,
                      backend=backend, reconnect=False, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hash_name", ["SHA-256", "SHA-512"])
async def test_scram_connects_and_reauthenticates(
    auth_broker: MosquittoServer, backend: str, hash_name: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    scram = CountingScram(info.scram_user, info.scram_password,
                          hash=hash_name)  # type: ignore[arg-type]
    topic = unique("scram")
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, scram, backend) as client:
            await client.connect(info.host, info.ext_auth_port)
            async with client.subscription(topic, qos=1) as messages:
                await client.publish(topic, "before", qos=1)
                await client.reauthenticate()
                await client.reauthenticate()
                await client.publish(topic, "after", qos=1)
                received = [(await messages.receive()).text for _ in range(2)]
            assert client.is_connected
    assert received == ["before", "after"]
    assert scram.starts == scram.verified == 3  # the connection's and two re-authentications


@pytest.mark.parametrize("backend", BACKENDS)
async def test_scram_over_tls_needs_no_opt_in(auth_broker: MosquittoServer, backend: str) -> None:
    info = auth_broker.info
    assert info.ext_auth_tls_port is not None
    scram = CountingScram(info.scram_user, info.scram_password)
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(protocol=5, authenticator=scram, tls=info.ssl_context(),
                              backend=backend) as client:  # type: ignore[arg-type]
            await client.connect(info.host, info.ext_auth_tls_port)
            await client.publish(unique("scram-tls"), "secret", qos=1)
            await client.reauthenticate()
    assert scram.verified == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_wrong_password_is_a_clean_connect_error(
    auth_broker: MosquittoServer, backend: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, ScramAuthenticator(info.scram_user, "not-the-password"),
                              backend) as client:
            with pytest.raises(MQTTAuthError) as caught:
                await client.connect(info.host, info.ext_auth_port)
            assert client.state is ConnectionState.DISCONNECTED
    assert isinstance(caught.value, MQTTConnectError)
    assert caught.value.reason_code == 0x87
    assert caught.value.method == "SCRAM-SHA-256"
    assert "not authorized" in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_broker_that_cannot_prove_itself_is_refused(
    auth_broker: MosquittoServer, backend: str
) -> None:
    # the plugin accepts the forged user's proof but signs with a wrong key: fail closed
    info = auth_broker.info
    assert info.ext_auth_port is not None
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, ScramAuthenticator(info.scram_forged_user,
                                                       info.scram_password), backend) as client:
            with pytest.raises(MQTTAuthError, match="signature is wrong") as caught:
                await client.connect(info.host, info.ext_auth_port)
            assert isinstance(caught.value.__cause__, ValueError)
            assert client.state is ConnectionState.DISCONNECTED
            with pytest.raises(MQTTAuthError):  # and again: no state left over
                await client.connect(info.host, info.ext_auth_port)
    assert caught.value.reason_code is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_generic_method_runs_several_rounds(
    auth_broker: MosquittoServer, backend: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    method = Scripted(b"rounds 3")
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, method, backend) as client:
            await client.connect(info.host, info.ext_auth_port)
            await client.publish(unique("rounds"), "in", qos=1)
    assert method.steps == [b"more"] * 3
    assert method.finished == [b"welcome"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("first", "expected"),
    [
        # more rounds than MAX_AUTH_ROUNDS: the client stops, it does not loop with the broker
        (b"rounds 1000", f"within {MAX_AUTH_ROUNDS} rounds"),
        # more data than MAX_AUTH_DATA (mosquitto sends up to 65535 bytes)
        (f"big {MAX_AUTH_DATA + 1}".encode(), "malformed AUTH packet"),
        # the broker refuses outright
        (b"refuse", "not authorized"),
    ],
)
async def test_a_misbehaving_exchange_fails_cleanly(
    auth_broker: MosquittoServer, backend: str, first: bytes, expected: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    method = Scripted(first)
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, method, backend) as client:
            with pytest.raises(MQTTAuthError, match=expected):
                await client.connect(info.host, info.ext_auth_port)
            assert client.state is ConnectionState.DISCONNECTED
    assert len(method.steps) <= MAX_AUTH_ROUNDS
    assert all(data is None or len(data) <= MAX_AUTH_DATA for data in method.steps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xfe\x00binary",
        b"r=someone-elses-nonce,s=c2FsdA==,i=4096",
        b"m=mandatory-extension,r=x,s=y,i=1",
        b"e=other-error",
    ],
)
async def test_garbage_from_the_broker_fails_scram_cleanly(
    auth_broker: MosquittoServer, backend: str, garbage: bytes
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, GarbageScram(garbage), backend) as client:
            with pytest.raises(MQTTAuthError, match="the broker's data was refused"):
                await client.connect(info.host, info.ext_auth_port)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_refused_reauthentication_fails_and_the_client_reconnects(
    auth_broker: MosquittoServer, backend: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    # exchange 1 (connect) passes, 2 (re-authentication) is refused, 3 (reconnect) passes
    method = Scripted(b"rounds 0", b"refuse", b"rounds 0")
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(protocol=5, authenticator=method, allow_insecure_auth=True,
                              backend=backend) as client:  # type: ignore[arg-type]
            await client.connect(info.host, info.ext_auth_port)
            with pytest.raises(MQTTAuthError) as caught:
                await client.reauthenticate()
            await client.wait_connected()
            await client.publish(unique("reauth"), "back", qos=1)
    assert caught.value.reason_code == 0x87
    assert method.starts == 3


async def test_reconnecting_after_a_broker_restart_authenticates_again(
    tls_ca: trustme.CA,
) -> None:
    with MosquittoServer(ca=tls_ca, auth_plugin=True) as broker:
        info = broker.info
        assert info.ext_auth_port is not None
        scram = CountingScram(info.scram_user, info.scram_password)
        with trio.fail_after(TEST_DEADLINE):
            async with MQTTClient(protocol=5, authenticator=scram,
                                  allow_insecure_auth=True) as client:
                await client.connect(info.host, info.ext_auth_port)
                async with client.connection_events() as events:
                    await trio.to_thread.run_sync(broker.restart)
                    async for event in events:
                        if event.state is ConnectionState.CONNECTED:
                            break
                await client.publish(unique("restart"), "after the restart", qos=1)
                await client.reauthenticate()
    # first connection, reconnection, re-authentication (an attempt made while the broker was
    # down started an exchange too, but never got to its end)
    assert scram.verified == 3


async def test_the_docs_example_runs(
    auth_broker: MosquittoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    info = auth_broker.info
    spec = importlib.util.spec_from_file_location("docs_example_mqtt_scram", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with trio.fail_after(TEST_DEADLINE):
        await module.main(f"mqtt://{info.host}:{info.ext_auth_port}", info.scram_user,
                          info.scram_password)
    assert capsys.readouterr().out == "authenticated twice\nrefused: reason code 0x87\n"


# -- the rules around it ------------------------------------------------------------------------


async def test_an_authenticator_needs_tls_or_the_opt_in() -> None:
    received: list[bytes] = []

    async def record(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            received.append(chunk)  # pragma: no cover - nothing may arrive

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(partial(trio.serve_tcp, record, 0,
                                                     host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            async with MQTTClient(protocol=5,
                                  authenticator=ScramAuthenticator("u", "p")) as client:
                with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
                    await client.connect("127.0.0.1", port)
            await trio.sleep(0.2)  # anything sent would have arrived by now
            nursery.cancel_scope.cancel()
    assert received == []


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="needs MQTT 5"):
        MQTTClient(authenticator=ScramAuthenticator("u", "p"))
    with pytest.raises(ConfigurationError, match="start"):
        MQTTClient(protocol=5, authenticator="SCRAM-SHA-256")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="hash"):
        ScramAuthenticator("u", "p", hash="MD5")  # type: ignore[arg-type]
    assert "hunter2" not in repr(ScramAuthenticator("u", "hunter2"))


async def test_reauthenticate_needs_an_authenticator(auth_broker: MosquittoServer) -> None:
    info = auth_broker.info
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(protocol=5) as client:
            await client.connect(info.host, info.port)
            with pytest.raises(ConfigurationError, match="authenticator"):
                await client.reauthenticate()


# -- what mosquitto will not do: the scripted broker ----------------------------------------------


def _auth_reply(method: str, data: bytes) -> bytes:
    return encode_auth(0x18, method, data)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_broker_that_never_finishes_a_reauthentication_times_out(backend: str) -> None:
    async def script(session: Session, connect: Packet) -> None:
        await session.connack()  # accepts without any exchange (Scripted checks nothing)
        while await session.read() is not None:
            pass  # and never answers the AUTH packet

    method = Scripted(b"anything")
    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, script)
            async with MQTTClient(protocol=5, authenticator=method, allow_insecure_auth=True,
                                  connect_timeout=0.5,
                                  backend=backend) as client:  # type: ignore[arg-type]
                await client.connect("127.0.0.1", port)
                with pytest.raises(MQTTTimeout, match="re-authentication"):
                    await client.reauthenticate()
                assert client.is_connected
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_broker_that_stalls_the_first_exchange_times_out(backend: str) -> None:
    async def script(session: Session, connect: Packet) -> None:
        await session.send(_auth_reply("TRIONET-TEST", b"challenge"))
        while await session.read() is not None:
            pass  # gets the answer, never sends the CONNACK

    method = Scripted(b"hello")
    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, script)
            async with MQTTClient(protocol=5, authenticator=method, allow_insecure_auth=True,
                                  connect_timeout=0.5, reconnect=False,
                                  backend=backend) as client:  # type: ignore[arg-type]
                with pytest.raises(MQTTTimeout, match="no CONNACK"):
                    await client.connect("127.0.0.1", port)
            nursery.cancel_scope.cancel()
    assert method.steps == [b"challenge"]


class FailingStart(Scripted):
    def start(self) -> bytes:
        raise RuntimeError("no credentials at hand")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_authenticator_that_fails_to_start_is_an_auth_error(
    auth_broker: MosquittoServer, backend: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    with trio.fail_after(TEST_DEADLINE):
        async with client_for(info, FailingStart(), backend) as client:
            with pytest.raises(MQTTAuthError, match="no credentials at hand") as caught:
                await client.connect(info.host, info.ext_auth_port)
    assert isinstance(caught.value.__cause__, RuntimeError)


class RefusesSecondFinish(Scripted):
    """Accepts the broker's proof once, then refuses it (a broker that turned impostor)."""

    def finish(self, server_data: bytes | None) -> None:
        super().finish(server_data)
        if len(self.finished) == 2:
            raise ValueError("not the broker we know")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_reauthentication_the_client_refuses_closes_the_connection(
    auth_broker: MosquittoServer, backend: str
) -> None:
    info = auth_broker.info
    assert info.ext_auth_port is not None
    method = RefusesSecondFinish(b"rounds 0")
    with trio.fail_after(TEST_DEADLINE):
        client = MQTTClient(protocol=5, authenticator=method, allow_insecure_auth=True,
                            backend=backend)  # type: ignore[arg-type]
        async with client, client.connection_events() as events:
            await client.connect(info.host, info.ext_auth_port)
            with pytest.raises(MQTTAuthError, match="not the broker we know") as caught:
                await client.reauthenticate()
            await _reconnected(events)  # (and the reconnect authenticated)
    assert caught.value.reason_code is None
    assert isinstance(caught.value.__cause__, ValueError)  # the authenticator's own error
    assert len(method.finished) == 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["ignores the method", "wrong method", "stray AUTH"])
async def test_broker_protocol_errors_fail_closed(backend: str, case: str) -> None:
    async def script(session: Session, connect: Packet) -> None:
        if case == "ignores the method":
            await session.connack()  # success without the SCRAM server signature
        elif case == "wrong method":
            await session.send(_auth_reply("SCRAM-SHA-1", b"r=x,s=c2FsdA==,i=1"))
        else:  # an AUTH with reason "success" before any CONNACK
            await session.send(packet(AUTH_KIND, 0, b""))
        while await session.read() is not None:
            pass

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, script)
            async with MQTTClient(protocol=5, authenticator=ScramAuthenticator("u", "p"),
                                  allow_insecure_auth=True, reconnect=False,
                                  backend=backend) as client:  # type: ignore[arg-type]
                with pytest.raises(MQTTAuthError):
                    await client.connect("127.0.0.1", port)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_auth_packet_outside_an_exchange_closes_the_connection(backend: str) -> None:
    connections = 0

    async def script(session: Session, connect: Packet) -> None:
        nonlocal connections
        connections += 1
        await session.connack()
        if connections == 1 and await session.read() is not None:  # (the client's publish)
            await session.send(_auth_reply("TRIONET-TEST", b"unasked"))
        while await session.read() is not None:
            pass

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, script)
            client = MQTTClient(protocol=5, authenticator=Scripted(b"x"),
                                allow_insecure_auth=True,
                                backend=backend)  # type: ignore[arg-type]
            async with client, client.connection_events() as events:
                await client.connect("127.0.0.1", port)
                await client.publish("stray/auth", "hello")
                await _reconnected(events)
            nursery.cancel_scope.cancel()
    assert connections == 2
