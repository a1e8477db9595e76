"""Connecting: credentials, TLS (also with client certificates), WebSockets, wills, MQTT 5
properties, connection events, and the failure modes (refused, unreachable, silent broker)."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, connected, unique, wait_for
from mqtt_scripted_broker import (
    PINGREQ,
    PUBCOMP,
    PUBLISH,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Packet,
    Session,
    serve_script,
)

from trionet.errors import (
    ConfigurationError,
    MQTTConnectError,
    MQTTError,
    MQTTNotConnected,
    MQTTTimeout,
)
from trionet.mqtt import (
    MQTTV5,
    ConnectionState,
    MessageProperties,
    MQTTClient,
    MQTTPublishError,
    MQTTSubscribeError,
    QoS,
    ReconnectPolicy,
    Will,
    open_mqtt_client,
)
from trionet.testing import MosquittoServer
from trionet.testing._servers import _free_port
from trionet.tls import TLSOptions


async def test_the_default_client_id_is_one_every_broker_must_accept(
    shared_mosquitto: MosquittoServer,
) -> None:
    # MQTT 3.1.1 §3.1.3.1: a server must accept 1-23 characters of [0-9a-zA-Z]; the default
    # used to be 24 characters with a "-"
    ids = [MQTTClient().client_id for _ in range(500)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-zA-Z]{1,23}", client_id) for client_id in ids), ids[:3]
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client:
            await wait_for(
                lambda: f" as {client.client_id} (p2" in info.log_file.read_text()  # 3.1.1
            )


async def test_username_and_password(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        # the password listener has no TLS: opting in to a password in clear is explicit
        async with MQTTClient(username=info.username, password=info.password,
                              allow_insecure_auth=True) as client:
            await client.connect(info.host, info.auth_port)
            assert client.is_connected
        # mtaio's connect(host, port, username, password) works too
        async with MQTTClient(allow_insecure_auth=True) as client:
            await client.connect(info.host, info.auth_port, username=info.username,
                                 password=info.password)
        url = (f"mqtt://{info.username}:{info.password}@{info.host}:{info.auth_port}"
               "?allow_insecure_auth=true")
        async with open_mqtt_client(url) as client:
            await client.publish(unique("auth"), "ok", qos=1)


@pytest.mark.parametrize("protocol", [4, 5])
async def test_wrong_password_is_refused_with_the_reason_code(
    shared_mosquitto: MosquittoServer, protocol: int
) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(username=info.username, password="wrong", protocol=protocol,
                              allow_insecure_auth=True) as c:
            with pytest.raises(MQTTConnectError) as refused:
                await c.connect(info.host, info.auth_port)
            assert c.state is ConnectionState.DISCONNECTED
            # anonymous clients are refused on that listener as well
    # 0x86 "bad user name or password" or 0x87 "not authorized" (3.1.1 codes 4/5, mapped)
    assert refused.value.reason_code in (0x86, 0x87)
    assert "refused" in str(refused.value)


async def test_unreachable_broker(shared_mosquitto: MosquittoServer) -> None:
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with trio.fail_after(TEST_DEADLINE):
            async with MQTTClient() as client:
                with pytest.raises(MQTTConnectError) as failed:
                    await client.connect("127.0.0.1", port)
    assert failed.value.reason_code is None
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


async def test_no_connack_is_a_timeout() -> None:
    async def silent(session: Session, connect: Packet) -> None:
        await trio.sleep_forever()

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, silent)
            async with MQTTClient(connect_timeout=0.3) as client:
                with pytest.raises(MQTTTimeout) as timeout:
                    await client.connect("127.0.0.1", port)
                assert isinstance(timeout.value, trio.TooSlowError)
                assert isinstance(timeout.value, MQTTError)
                assert client.state is ConnectionState.DISCONNECTED
            nursery.cancel_scope.cancel()


@BACKENDS
async def test_tls_with_the_test_ca(shared_mosquitto: MosquittoServer, backend: Backend) -> None:
    info = shared_mosquitto.info
    topic = unique("tls")
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(tls=info.ssl_context(), backend=backend) as client:
            await client.connect(info.host, info.tls_port)
            async with client.subscription(topic, qos=1) as messages:
                await client.publish(topic, "secret", qos=1)
                assert (await messages.receive()).payload == b"secret"


@pytest.mark.parametrize("trust", ["system", "other-ca"])
async def test_tls_with_an_untrusted_ca_is_refused(
    shared_mosquitto: MosquittoServer, trust: str
) -> None:
    info = shared_mosquitto.info
    context = ssl.create_default_context()
    if trust == "other-ca":
        context = ssl.create_default_context(cafile=None)
        trustme.CA().configure_trust(context)
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(tls=context) as client:
            with pytest.raises(MQTTConnectError) as refused:
                await client.connect(info.host, info.tls_port)
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)


class MosquittoWithClientCertificates(MosquittoServer):
    """The fixture's broker plus a TLS listener that requires a client certificate."""

    mtls_port = 0

    def _configure(self, directory: Path) -> None:
        super()._configure(directory)
        tls = self._tls
        assert tls is not None
        self.mtls_port = _free_port()
        with open(directory / "mosquitto.conf", "a") as conf:
            conf.write(
                f"\nlistener {self.mtls_port} 127.0.0.1\nallow_anonymous false\n"
                f"cafile {tls.ca_file}\ncertfile {tls.cert_file}\nkeyfile {tls.key_file}\n"
                "require_certificate true\nuse_identity_as_username true\n"
                "tls_version tlsv1.2\n"
            )
        self._children[0].ready_ports.append(self.mtls_port)


async def test_tls_client_certificates(tls_ca: trustme.CA) -> None:
    server = MosquittoWithClientCertificates(ca=tls_ca)
    await trio.to_thread.run_sync(server.start)
    try:
        info = server.info
        with_cert = info.ssl_context()
        tls_ca.issue_cert("client.example", common_name="client.example").configure_cert(
            with_cert)
        with trio.fail_after(TEST_DEADLINE):
            async with MQTTClient(tls=with_cert) as client:
                await client.connect(info.host, server.mtls_port)
                await client.publish(unique("mtls"), "hello", qos=1)
            async with MQTTClient(tls=info.ssl_context()) as client:  # no certificate
                with pytest.raises(MQTTConnectError):
                    await client.connect(info.host, server.mtls_port)
            # the same with the tls= vocabulary's file names (trionet.tls.TLSOptions)
            leaf = tls_ca.issue_cert("client.example", common_name="client.example")
            cert_file = server.directory / "client.pem"
            cert_file.write_bytes(
                b"".join(blob.bytes() for blob in (*leaf.cert_chain_pems, leaf.private_key_pem))
            )
            options = TLSOptions(ca_file=info.ca_file, cert_file=cert_file)
            async with MQTTClient(tls=options) as client:
                await client.connect(info.host, server.mtls_port)
                await client.publish(unique("mtls"), "hello", qos=1)
    finally:
        await trio.to_thread.run_sync(server.close)


@BACKENDS
@pytest.mark.parametrize("protocol", [4, 5])
async def test_websockets_transport(
    shared_mosquitto: MosquittoServer, protocol: int, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("ws")
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(
            transport="websockets", protocol=protocol, backend=backend
        ) as client:
            await client.connect(info.host, info.ws_port)
            async with client.subscription(topic, qos=2) as messages:
                await client.publish_many([(topic, f"{i}".encode()) for i in range(50)], qos=1)
                got = [int((await messages.receive()).payload) for _ in range(50)]
        assert got == list(range(50))
        async with open_mqtt_client(f"ws://{info.host}:{info.ws_port}/mqtt") as client:
            await client.publish(topic, "via url", qos=1)


_WILL_SCRIPT = """
import sys, trio
from trionet.mqtt import MQTTClient, Will

async def main(host, port, topic):
    client = MQTTClient(will=Will(topic, "connection lost", qos=1))
    async with client:
        await client.connect(host, int(port))
        print("connected", flush=True)
        await trio.sleep_forever()

trio.run(main, *sys.argv[1:])
"""


async def test_will_is_published_when_the_client_dies(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("will")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as watcher, watcher.subscription(topic, qos=1) as wills:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _WILL_SCRIPT, info.host, str(info.port), topic],
                stdout=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None
                output = b""
                while not output.endswith(b"\n"):
                    output += await process.stdout.receive_some(100)
                assert output == b"connected\n"
                process.kill()  # SIGKILL: no DISCONNECT, the broker sees the socket drop
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                if process.stdout is not None:
                    await process.stdout.aclose()
            will = await wills.receive()
            assert (will.payload, will.qos) == (b"connection lost", QoS.AT_LEAST_ONCE)
            # a clean disconnect does not send the will
            async with connected(info, will=Will(topic, "not sent", qos=1)):
                pass
            await trio.sleep(0.3)
            with pytest.raises(trio.WouldBlock):
                wills.receive_nowait()


async def test_mqtt5_properties_round_trip(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("props")
    sent = MessageProperties(
        payload_format_indicator=1,
        message_expiry_interval=3600,
        content_type="application/json",
        response_topic=f"{topic}/answers",
        correlation_data=b"\x00\x01corr",
        user_properties=(("trace", "abc"), ("trace", "def"), ("ünï", "cödé")),
    )
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, protocol=MQTTV5) as client,
            client.subscription(topic, qos=1) as messages,
        ):
            await client.publish(topic, '{"a": 1}', qos=1, properties=sent)
            # no subscriber: 0x10 "no matching subscribers" is a success code
            await client.publish(unique("nobody"), "x", qos=1)
            message = await messages.receive()
    props = message.properties
    assert props is not None
    assert props.content_type == "application/json"
    assert props.response_topic == f"{topic}/answers"
    assert props.correlation_data == b"\x00\x01corr"
    assert props.user_properties == sent.user_properties  # order and repeats kept
    assert props.payload_format_indicator == 1
    assert props.message_expiry_interval is not None
    assert 0 < props.message_expiry_interval <= 3600
    assert len(props.subscription_identifiers) == 1  # trionet routes MQTT 5 messages by them
    assert message.json() == {"a": 1}


async def test_mqtt5_only_features_need_mqtt5(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client:
            with pytest.raises(ConfigurationError, match="MQTT 5"):
                await client.publish("t", "x", properties=MessageProperties(content_type="x"))
            with pytest.raises(ConfigurationError, match="MQTT 5"):
                await client.subscribe("t", no_local=True)


async def test_mqtt5_no_local_and_session_expiry(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("nolocal")
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, protocol=MQTTV5, session_expiry=0) as client,
            client.subscription(topic, qos=1, no_local=True) as own,
            client.subscription(f"{topic}/#", qos=1) as everything,
        ):
            await client.publish(topic, "mine", qos=1)
            assert (await everything.receive()).payload == b"mine"
            await trio.sleep(0.2)
            with pytest.raises(trio.WouldBlock):
                own.receive_nowait()


async def test_connection_events_and_disconnect(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient() as client, client.connection_events() as events:
            await client.connect(info.host, info.port)
            await client.wait_connected()
            await client.disconnect()
            with pytest.raises(MQTTNotConnected):
                await client.publish("t", "x", qos=1)
            with pytest.raises(MQTTError, match="already"):
                await client.connect(info.host, info.port)
                await client.connect(info.host, info.port)
            await client.disconnect()
            states = []
            while True:
                try:
                    states.append(events.receive_nowait().state)
                except trio.WouldBlock:
                    break
        assert states == [
            ConnectionState.CONNECTING, ConnectionState.CONNECTED,
            ConnectionState.DISCONNECTED,
            ConnectionState.CONNECTING, ConnectionState.CONNECTED,
            ConnectionState.DISCONNECTED,
        ]
        assert client.state is ConnectionState.CLOSED


async def test_refused_subscription_and_publish_raise_with_the_reason_code() -> None:
    async def refuse(session: Session, connect: Packet) -> None:
        await session.connack()
        while (request := await session.read()) is not None:
            if request.kind == SUBSCRIBE:
                await session.suback(request.packet_id, 0x87 if session.protocol == 5 else 0x80)
            elif request.kind == PUBLISH:
                await session.ack(4, request.packet_id, 0x97)  # PUBACK "quota exceeded"
            elif request.kind == UNSUBSCRIBE:
                await session.send(bytes([0xB0, 2]) + request.body[:2])

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, refuse)
            async with MQTTClient() as client:
                await client.connect("127.0.0.1", port)
                with pytest.raises(MQTTSubscribeError) as refused:
                    await client.subscribe("forbidden/#", qos=1)
                assert (refused.value.reason_code, refused.value.topic) == (0x80, "forbidden/#")
            async with MQTTClient(protocol=MQTTV5) as client:
                await client.connect("127.0.0.1", port)
                with pytest.raises(MQTTSubscribeError) as refused:
                    async with client.subscription("forbidden/#"):
                        pass
                assert refused.value.reason_code == 0x87
                with pytest.raises(MQTTPublishError) as rejected:
                    await client.publish("full", "x", qos=1)
                assert rejected.value.reason_code == 0x97
            nursery.cancel_scope.cancel()


@BACKENDS
async def test_a_dead_broker_is_detected_by_keepalive_and_the_client_reconnects(
    backend: Backend,
) -> None:
    connections = 0

    async def stops_answering(session: Session, connect: Packet) -> None:
        nonlocal connections
        connections += 1
        await session.connack()
        while (request := await session.read()) is not None:
            if request.kind == PINGREQ and connections > 1:
                await session.send(bytes([0xD0, 0]))  # PINGRESP, but only on the second link

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, stops_answering)
            policy = ReconnectPolicy(initial_delay=0.05, jitter=0)
            async with (
                MQTTClient(keepalive=1, reconnect=policy, backend=backend) as client,
                client.connection_events() as events,
            ):
                await client.connect("127.0.0.1", port)
                seen = []
                async for event in events:
                    seen.append(event.state)
                    if event.state is ConnectionState.RECONNECTING:
                        assert "keepalive" in event.reason or "lost" in event.reason
                    if seen[-2:] == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED]:
                        break
                assert client.statistics().reconnects == 1
            nursery.cancel_scope.cancel()


async def test_pubrel_for_an_already_delivered_message_is_completed() -> None:
    """After a reconnect a broker may resend PUBREL for a QoS 2 message the client has
    delivered already; the client must answer PUBCOMP (paho stays silent with manual acks)."""
    answered = trio.Event()

    async def stray_pubrel(session: Session, connect: Packet) -> None:
        await session.connack(session_present=True)
        await session.ack(PUBREL, 77)
        while (reply := await session.read()) is not None:
            if reply.kind == PUBCOMP and reply.packet_id == 77:
                answered.set()

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, stray_pubrel)
            async with MQTTClient() as client:
                await client.connect("127.0.0.1", port)
                await answered.wait()
            nursery.cancel_scope.cancel()


@BACKENDS
async def test_a_connection_dropped_right_after_connack_is_not_taken_for_connected(
    backend: Backend,
) -> None:
    """Connections 1 and 2 are accepted and hung up at once, 3 holds. Whether a hang-up is
    seen before or after connect()/the reconnect returns, the client must never stay
    'connected' on a dead socket: it ends up connected on the third connection."""
    connections = 0

    async def flaky(session: Session, connect: Packet) -> None:
        nonlocal connections
        connections += 1
        await session.connack()
        if connections < 3:
            await session.stream.aclose()
            return
        while await session.read() is not None:
            pass

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, flaky)
            policy = ReconnectPolicy(initial_delay=0.01, jitter=0)
            async with MQTTClient(reconnect=policy, backend=backend) as client:
                while True:
                    try:
                        await client.connect("127.0.0.1", port)
                        break
                    except MQTTConnectError as exc:
                        assert "right after accepting" in str(exc)
                await wait_for(lambda: connections == 3 and client.is_connected)
                await client.publish("still/there", "x")  # the connection works
            nursery.cancel_scope.cancel()
