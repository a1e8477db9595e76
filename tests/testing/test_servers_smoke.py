"""Smoke tests of the real-server fixtures, each driven by the plain blocking library.

paho-mqtt, kafka-python, smtplib and imaplib are used directly here (in sync tests), so that the
servers are known to work before trionet's own clients are tested against them. paho's network
loop is pumped by hand with ``Client.loop()``: no background thread is started.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib
import socket
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from trionet.errors import ConfigurationError
from trionet.testing import KafkaTLSBroker
from trionet.testing._servers import (
    KAFKA_BOOTSTRAP_ENV,
    KAFKA_TEST_CONSUMER_CONFIG,
    KafkaBroker,
    MailInfo,
    MailServers,
    MailUser,
    MosquittoInfo,
    MosquittoServer,
    ServerError,
    ServerNotInstalled,
    ServerStartError,
    _alive,
    _descendants,
    _identity,
    fresh_loopback_address,
)

pytest_plugins = ["pytester"]

WAIT = 10.0  # upper bound for any single wait below; never reached when things work

# kafka-python 3.0 loads its schemas with importlib.resources.read_text, deprecated since 3.11
kafka_python_import_warning = pytest.mark.filterwarnings(
    r"ignore:(read|open)_text is deprecated:DeprecationWarning"
)


# -- helpers ------------------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address_hex, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port or fields[3] != "0A":
                continue
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def assert_loopback_only(*ports: int) -> None:
    for port in ports:
        assert listening_addresses(port) == {"127.0.0.1"}, port


def wait_for(condition: Callable[[], bool], step: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        step()


class MqttClient:
    """A paho 2 client (VERSION2 callbacks) whose network loop the test pumps by hand."""

    def __init__(
        self,
        port: int,
        *,
        transport: str = "tcp",
        client_id: str | None = None,
        clean_session: bool = True,
        credentials: tuple[str, str] | None = None,
        tls: MosquittoInfo | None = None,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"smoke-{uuid.uuid4().hex[:12]}",
            clean_session=clean_session,
            transport=transport,  # type: ignore[arg-type]
        )
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        if tls is not None:
            self.client.tls_set_context(tls.ssl_context())
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.disconnected = False
        self.messages: list[mqtt.MQTTMessage] = []
        self.subacks: set[int] = set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)
        self.client.on_subscribe = lambda _c, _u, mid, _rcs, _p: self.subacks.add(mid)

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason
        self.session_present = bool(flags.session_present)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self.disconnected = True

    def pump(self) -> None:
        self.client.loop(timeout=0.01)

    def connect(self) -> ReasonCode:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        wait_for(lambda: self.connack is not None, self.pump, "CONNACK")
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic: str, qos: int) -> None:
        _, mid = self.client.subscribe(topic, qos)
        wait_for(lambda: mid in self.subacks, self.pump, "SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(timeout=0.01)


@pytest.fixture
def mqtt_clients() -> Iterator[Callable[..., MqttClient]]:
    made: list[MqttClient] = []

    def make(port: int, **kwargs: Any) -> MqttClient:
        made.append(MqttClient(port, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def qos1_round_trip(make: Callable[..., MqttClient], port: int, **kwargs: Any) -> None:
    topic = f"smoke/{uuid.uuid4().hex}"
    subscriber = make(port, **kwargs)
    publisher = make(port, **kwargs)
    assert not subscriber.connect().is_failure
    assert not publisher.connect().is_failure
    subscriber.subscribe(topic, 1)
    sent = publisher.client.publish(topic, b"payload-" + topic.encode(), qos=1)

    def both() -> None:
        publisher.pump()
        subscriber.pump()

    wait_for(lambda: bool(subscriber.messages) and sent.is_published(), both, "QoS 1 delivery")
    (message,) = subscriber.messages
    assert (message.topic, message.payload, message.qos) == (topic, b"payload-" + topic.encode(), 1)


def process_tree(pids: Iterable[int]) -> list[tuple[int, int]]:
    tree: list[tuple[int, int]] = []
    for pid in pids:
        identity = _identity(pid)
        assert identity is not None
        tree += [identity, *_descendants(pid)]
    return tree


# -- mosquitto ----------------------------------------------------------------------------------


def test_mosquitto_plain_listener_qos1(
    shared_mosquitto: MosquittoServer, mqtt_clients: Callable[..., MqttClient]
) -> None:
    info = shared_mosquitto.info
    assert_loopback_only(info.port, info.auth_port, info.tls_port, info.ws_port)
    qos1_round_trip(mqtt_clients, info.port)


def test_mosquitto_auth_listener_accepts_user_and_refuses_wrong_password(
    shared_mosquitto: MosquittoServer, mqtt_clients: Callable[..., MqttClient]
) -> None:
    info = shared_mosquitto.info
    qos1_round_trip(mqtt_clients, info.auth_port, credentials=(info.username, info.password))
    wrong = mqtt_clients(info.auth_port, credentials=(info.username, "wrong-password"))
    assert wrong.connect().is_failure
    anonymous = mqtt_clients(info.auth_port)
    assert anonymous.connect().is_failure


def test_mosquitto_tls_listener_qos1(
    shared_mosquitto: MosquittoServer, mqtt_clients: Callable[..., MqttClient]
) -> None:
    info = shared_mosquitto.info
    qos1_round_trip(mqtt_clients, info.tls_port, tls=info)


def test_mosquitto_websockets_listener_qos1(
    shared_mosquitto: MosquittoServer, mqtt_clients: Callable[..., MqttClient]
) -> None:
    qos1_round_trip(mqtt_clients, shared_mosquitto.info.ws_port, transport="websockets")


def test_mosquitto_graceful_restart_keeps_queued_message(
    mosquitto: MosquittoServer, mqtt_clients: Callable[..., MqttClient]
) -> None:
    info = mosquitto.info
    topic = f"persist/{uuid.uuid4().hex}"
    client_id = f"persist-{uuid.uuid4().hex[:8]}"
    offline = mqtt_clients(info.port, client_id=client_id, clean_session=False)
    offline.connect()
    offline.subscribe(topic, 1)
    offline.close()
    publisher = mqtt_clients(info.port)
    publisher.connect()
    sent = publisher.client.publish(topic, b"queued", qos=1)
    wait_for(sent.is_published, publisher.pump, "PUBACK")
    publisher.close()
    old_pid = mosquitto.pid

    mosquitto.restart()

    assert mosquitto.pid not in (None, old_pid)
    assert mosquitto.info == info
    back = mqtt_clients(info.port, client_id=client_id, clean_session=False)
    assert not back.connect().is_failure
    assert back.session_present
    wait_for(lambda: bool(back.messages), back.pump, "queued message")
    assert back.messages[0].payload == b"queued"


def test_mosquitto_kill_drops_clients_and_start_reuses_ports(
    mosquitto: MosquittoServer, mqtt_clients: Callable[..., MqttClient]
) -> None:
    info = mosquitto.info
    client = mqtt_clients(info.port)
    client.connect()
    old_pid = mosquitto.pid

    mosquitto.kill()

    assert mosquitto.pids == ()
    assert not mosquitto.running
    wait_for(lambda: client.disconnected, client.pump, "the client to notice")
    mosquitto.start()
    assert mosquitto.pid not in (None, old_pid)
    qos1_round_trip(mqtt_clients, info.port)
    mosquitto.restart(hard=True)
    qos1_round_trip(mqtt_clients, info.ws_port, transport="websockets")


# -- Kafka --------------------------------------------------------------------------------------


@kafka_python_import_warning
def test_kafka_create_topic_produce_and_consume_with_group(kafka_broker: KafkaBroker) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    info = kafka_broker.info
    if not info.external:
        assert_loopback_only(info.port)
    topic = f"smoke-{uuid.uuid4().hex[:12]}"
    group = f"smoke-group-{uuid.uuid4().hex[:12]}"
    values = [f"value-{i}".encode() for i in range(20)]

    admin = KafkaAdminClient(bootstrap_servers=info.bootstrap_servers, client_id="smoke-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        producer = KafkaProducer(bootstrap_servers=info.bootstrap_servers, acks="all")
        try:
            for i, value in enumerate(values):
                producer.send(topic, key=f"key-{i % 2}".encode(), value=value)
            producer.flush(timeout=WAIT)
        finally:
            producer.close(timeout=WAIT)

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=info.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **KAFKA_TEST_CONSUMER_CONFIG,
        )
        received: list[bytes] = []
        try:
            def poll() -> None:
                for records in consumer.poll(timeout_ms=100).values():
                    received.extend(record.value for record in records)

            wait_for(lambda: len(received) >= len(values), poll, "the records")
            consumer.commit()
            committed = [consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
        finally:
            consumer.close()
        assert sorted(received) == sorted(values)
        assert sum(offset or 0 for offset in committed) == len(values)
        admin.delete_topics([topic])
    finally:
        admin.close()


def test_kafka_tls_broker_listens_on_loopback_and_advertises_its_tls_port(
    kafka_tls_broker: KafkaTLSBroker,
) -> None:
    from kafka import KafkaAdminClient

    info = kafka_tls_broker.info
    assert_loopback_only(info.port, info.plain_port)
    assert len(kafka_tls_broker.pids) == 2  # the broker and the terminator
    admin = KafkaAdminClient(bootstrap_servers=info.bootstrap_servers, security_protocol="SSL",
                             ssl_cafile=str(info.ca_file), client_id="smoke-tls")
    try:
        brokers = admin._client.cluster.brokers()
    finally:
        admin.close()
    assert {(broker.host, broker.port) for broker in brokers} == {("127.0.0.1", info.port)}
    assert info.handshakes()
    assert kafka_tls_broker.direct_connections() == 0


def test_kafka_bootstrap_env_selects_an_existing_broker(
    kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KAFKA_BOOTSTRAP_ENV, kafka_broker.info.bootstrap_servers)
    with KafkaBroker.from_env() as external:
        assert external.external
        assert external.info.external
        assert external.info.bootstrap_servers == kafka_broker.info.bootstrap_servers
        assert external.pid is None
        with pytest.raises(ServerError, match="external"):
            external.restart()
    monkeypatch.setenv(KAFKA_BOOTSTRAP_ENV, "no-port-here")
    with pytest.raises(ConfigurationError, match=KAFKA_BOOTSTRAP_ENV):
        KafkaBroker.from_env()


# -- mail ---------------------------------------------------------------------------------------


class IMAP4From(imaplib.IMAP4):
    """imaplib.IMAP4 connecting from a chosen local address."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=WAIT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def fetch_by_message_id(info: MailInfo, user: MailUser, message_id: str) -> bytes:
    with imaplib.IMAP4_SSL(
        info.host, info.imaps_port, ssl_context=info.ssl_context(), timeout=WAIT
    ) as imap:
        imap.login(user.address, user.password)
        found: list[bytes] = []

        def search() -> None:
            imap.select("INBOX")
            _, data = imap.search(None, "HEADER", "Message-ID", message_id)
            found.extend(data[0].split())

        wait_for(lambda: bool(found), search, f"{message_id} in {user.address}'s INBOX")
        typ, data = imap.fetch(found[-1].decode(), "(RFC822)")
        assert typ == "OK"
        part = data[0]
        assert isinstance(part, tuple)
        return part[1]


def test_mail_smtp_starttls_auth_plain_then_imaps_fetch(mail_servers: MailServers) -> None:
    info = mail_servers.info
    assert_loopback_only(
        info.smtp_port, info.smtps_port, info.imap_port, info.imaps_port, info.smtp_plain_port
    )
    alice, bob = info.user("alice"), info.user("bob")
    message_id = f"<{uuid.uuid4().hex}@{info.domain}>"
    message = EmailMessage()
    message["From"] = alice.address
    message["To"] = bob.address
    message["Subject"] = "smoke test"
    message["Message-ID"] = message_id
    message.set_content("Hello Bob, this went through Postfix and Dovecot.\n")

    with smtplib.SMTP(info.host, info.smtp_port, timeout=WAIT) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")  # AUTH only after STARTTLS
        smtp.starttls(context=info.ssl_context())
        smtp.ehlo("client.example.test")
        smtp.user, smtp.password = alice.address, alice.password
        code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        assert code == 235
        assert smtp.send_message(message) == {}

    received = email.message_from_bytes(
        fetch_by_message_id(info, bob, message_id), policy=email.policy.default
    )
    assert received["Subject"] == "smoke test"
    assert received["From"] == alice.address
    body = received.get_body()
    assert body is not None
    assert "this went through Postfix and Dovecot" in body.get_content()


def test_mail_smtps_and_lmtp_deliver_into_the_maildir(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice, bob = info.user("alice"), info.user("bob")
    smtps_id = f"<{uuid.uuid4().hex}@{info.domain}>"
    lmtp_id = f"<{uuid.uuid4().hex}@{info.domain}>"

    with smtplib.SMTP_SSL(
        info.host, info.smtps_port, context=info.ssl_context(), timeout=WAIT
    ) as smtp:
        smtp.login(bob.address, bob.password)
        smtp.sendmail(
            bob.address, [alice.address], f"Message-ID: {smtps_id}\r\nSubject: s\r\n\r\nbody\r\n"
        )
    with smtplib.LMTP(str(info.lmtp_socket)) as lmtp:
        lmtp.sendmail(
            "someone@elsewhere.test",
            [alice.address],
            f"Message-ID: {lmtp_id}\r\nSubject: l\r\n\r\nbody\r\n",
        )
    assert fetch_by_message_id(info, alice, smtps_id)

    maildir = info.maildir("alice")
    assert maildir == info.maildir(alice)

    def maildir_ids() -> set[str]:
        found: set[str] = set()
        for sub in ("new", "cur"):
            for path in (maildir / sub).glob("*"):
                found.update(line.split(":", 1)[1].strip() for line in path.read_text(
                    errors="replace").splitlines() if line.lower().startswith("message-id:"))
        return found

    wait_for(lambda: {smtps_id, lmtp_id} <= maildir_ids(), lambda: time.sleep(0.02), "maildir")


def test_mail_plain_smtp_port_offers_auth_without_tls(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    with smtplib.SMTP(
        info.host, info.smtp_plain_port, timeout=WAIT,
        source_address=(fresh_loopback_address(), 0),
    ) as smtp:
        smtp.ehlo("client.example.test")
        assert not smtp.has_extn("starttls")
        assert smtp.has_extn("auth")
        smtp.user, smtp.password = alice.address, alice.password
        code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        assert code == 235


def test_mail_remote_client_needs_tls_and_bad_passwords_are_refused(
    mail_servers: MailServers,
) -> None:
    info = mail_servers.info
    alice = info.user("alice@example.test")
    # from another loopback address Dovecot treats us as remote: no plaintext login before TLS
    imap = IMAP4From(info.host, info.imap_port, fresh_loopback_address())
    try:
        assert "LOGINDISABLED" in imap.capabilities
        imap.starttls(ssl_context=info.ssl_context())
        assert "LOGINDISABLED" not in imap.capabilities
        typ, _ = imap.login(alice.address, alice.password)
        assert typ == "OK"
    finally:
        imap.logout()

    bad_imap = IMAP4From(info.host, info.imap_port, fresh_loopback_address())
    try:
        bad_imap.starttls(ssl_context=info.ssl_context())
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            bad_imap.login(alice.address, "wrong-password")
    finally:
        bad_imap.logout()

    with smtplib.SMTP(
        info.host, info.smtp_port, timeout=WAIT, source_address=(fresh_loopback_address(), 0)
    ) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=info.ssl_context())
        smtp.ehlo("client.example.test")
        smtp.user, smtp.password = alice.address, "wrong-password"
        # one attempt: smtplib's login() would retry with LOGIN from the same address, which
        # Dovecot's auth penalty delays by seconds
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("PLAIN", smtp.auth_plain)
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("mallory@elsewhere.test", [alice.address], b"Subject: x\r\n\r\nx\r\n")
    with pytest.raises(KeyError):
        info.user("carol")


# -- life cycle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [MosquittoServer, KafkaBroker, MailServers, KafkaTLSBroker])
def test_close_stops_every_process_and_removes_the_directory(make: Callable[[], Any]) -> None:
    server = make()
    with server:
        directory = server.directory
        assert directory.is_dir()
        assert len(str(directory)) < 40
        tree = process_tree(server.pids)
        assert tree
        assert all(_alive(identity) for identity in tree)
    assert not [identity for identity in tree if _alive(identity)]
    assert not directory.exists()
    assert server.pids == ()
    with pytest.raises(ServerError, match="not been started"):
        server.directory  # noqa: B018


def test_missing_program_names_the_apt_package() -> None:
    server = MosquittoServer(binary="/nonexistent/sbin/mosquitto")
    with pytest.raises(ServerNotInstalled, match="apt-get install mosquitto") as missing:
        server.start()
    assert (missing.value.package, missing.value.installer) == ("mosquitto", "apt")
    assert server.pids == ()


def test_server_exiting_at_start_fails_fast_and_leaves_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "fake-mosquitto"
    fake.write_text("#!/bin/sh\necho 'Error: pretend configuration problem' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = MosquittoServer(binary=str(fake), startup_timeout=60.0)
    with pytest.raises(ServerStartError, match="status 3") as failed, server:
        pass
    assert "pretend configuration problem" in failed.value.log_tail
    assert server.pids == ()
    with pytest.raises(ServerError, match="not been started"):
        server.directory  # noqa: B018


def test_bad_credentials_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        MosquittoServer(username="a:b")
    with pytest.raises(ConfigurationError):
        MailServers(users={"carol@example.test": "pw"})
    with pytest.raises(ConfigurationError):
        KafkaBroker(bootstrap="localhost")


def test_fresh_loopback_addresses_are_distinct_and_bindable() -> None:
    addresses = [fresh_loopback_address() for _ in range(300)]
    assert len(set(addresses)) == len(addresses)
    for address in (addresses[0], addresses[-1]):
        with socket.socket() as sock:
            sock.bind((address, 0))


def test_plugin_fixtures_leave_no_process_behind(pytester: pytest.Pytester) -> None:
    record = pytester.path / "processes.txt"
    pytester.makepyfile(
        test_inner=textwrap.dedent(
            f"""
            from trionet.testing._servers import _descendants, _identity

            def note(*servers):
                with open({str(record)!r}, "a") as f:
                    for server in servers:
                        for pid in server.pids:
                            for pid_, start in [_identity(pid), *_descendants(pid)]:
                                f.write(f"{{pid_}} {{start}}\\n")

            def test_uses_every_fixture(
                tls_ca, mosquitto, shared_mosquitto, kafka_broker, mail_servers,
                kafka_tls_broker, kafka_mtls_broker,
            ):
                note(mosquitto, shared_mosquitto, kafka_broker, mail_servers,
                     kafka_tls_broker, kafka_mtls_broker)
                assert mosquitto.info.ca_file.read_bytes() == tls_ca.cert_pem.bytes()
                assert kafka_tls_broker.info.ca_file.read_bytes() == tls_ca.cert_pem.bytes()
            """
        )
    )
    # In-process, the outer run has imported trionet (its pytest plugin) already, and pytest
    # may warn that it cannot rewrite its asserts: no fault of the fixtures under test.
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-W", "error",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    )
    result.assert_outcomes(passed=1)
    lines = record.read_text().split("\n")
    tree = [(int(pid), int(start)) for pid, start in (line.split() for line in lines if line)]
    assert len(tree) >= 4  # two mosquittos, dovecot, postfix (+ noida, + workers)
    assert not [identity for identity in tree if _alive(identity)]
