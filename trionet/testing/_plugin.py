"""pytest plugin: fixtures that run real servers on loopback for the duration of a test or session.

Installing trionet registers this module through the ``pytest11`` entry point, so the fixtures
are available in every pytest run without any ``conftest.py``:

``tls_ca`` (session)
    The :class:`trustme.CA` that issued every server certificate below.
``mosquitto`` (function)
    A fresh :class:`~trionet.testing.MosquittoServer` per test, safe to stop, kill and restart.
``shared_mosquitto`` (session)
    One :class:`~trionet.testing.MosquittoServer` for the whole session; do not restart it, and
    use unique topics and client ids.
``kafka_broker`` (session)
    A :class:`~trionet.testing.KafkaBroker`: a private noida-db, or the broker named by the
    ``TRIONET_KAFKA_BOOTSTRAP=host:port`` environment variable.
``kafka_tls_broker`` (session)
    A :class:`~trionet.testing.KafkaTLSBroker`: Tansu behind a TLS terminator, reachable only
    over TLS (certificate from ``tls_ca``).
``kafka_mtls_broker`` (session)
    The same, but the terminator also requires a client certificate from ``tls_ca``.
``mail_servers`` (session)
    :class:`~trionet.testing.MailServers`: Dovecot (IMAP, IMAPS, LMTP) and Postfix (SMTP, SMTPS).
``span_exporter`` (function)
    An OpenTelemetry SDK ``InMemorySpanExporter`` that receives trionet's spans during the test
    (:func:`trionet.tracing.installed`); needs ``opentelemetry-sdk``.

A fixture whose server cannot start fails the test with the reason (for example which apt
package is missing); it never skips. This module imports only pytest at import time; trustme and
the server code are imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import trustme
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ._kafka_tls import KafkaTLSBroker
    from ._servers import KafkaBroker, MailServers, MosquittoServer


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A trustme certificate authority shared by the session's servers.

    Every server fixture gets its certificate from this CA, so ``tls_ca.configure_trust(ctx)``
    or the servers' ``info.ssl_context()`` / ``info.ca_file`` make a client trust all of them.
    """
    from ._servers import _new_ca

    return _new_ca("tls_ca")


@pytest.fixture
def mosquitto(tls_ca: trustme.CA) -> Iterator[MosquittoServer]:
    """A private mosquitto for one test: plain, password, TLS and WebSockets listeners.

    Connection details are in ``mosquitto.info`` (:class:`~trionet.testing.MosquittoInfo`).
    ``mosquitto.restart()`` (``SIGTERM``, state saved), ``mosquitto.restart(hard=True)``
    (``SIGKILL``), ``kill()``/``stop()`` and ``start()`` act on the broker mid-test and keep its
    ports. From a trio test call them through ``trio.to_thread.run_sync``.
    """
    from ._servers import MosquittoServer

    with MosquittoServer(ca=tls_ca) as server:
        yield server


@pytest.fixture(scope="session")
def shared_mosquitto(tls_ca: trustme.CA) -> Iterator[MosquittoServer]:
    """One mosquitto for the whole session, for tests that leave the broker alone.

    Use unique topics and client ids; tests that stop or restart the broker take
    ``mosquitto`` instead.
    """
    from ._servers import MosquittoServer

    with MosquittoServer(ca=tls_ca) as server:
        yield server


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A Kafka-protocol broker for the session: ``kafka_broker.info.bootstrap_servers``.

    Without ``TRIONET_KAFKA_BOOTSTRAP`` it is a private noida-db (no TLS). With
    ``TRIONET_KAFKA_BOOTSTRAP=host:port`` nothing is started and the fixture points at that
    broker. Use unique topic and group names, and give consumers
    ``KAFKA_TEST_CONSUMER_CONFIG``.
    """
    from ._servers import KafkaBroker

    with KafkaBroker.from_env() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_tls_broker(tls_ca: trustme.CA) -> Iterator[KafkaTLSBroker]:
    """A Kafka-protocol broker whose only advertised listener is TLS, for the session.

    Clients bootstrap from ``kafka_tls_broker.info.bootstrap_servers`` with
    ``tls=kafka_tls_broker.info.tls_options()``. It is Tansu (memory storage) behind a TLS
    terminator: see :class:`~trionet.testing.KafkaTLSBroker` for the deviations from Apache
    Kafka that tests must avoid (prefer assigned partitions to consumer groups).
    """
    from ._kafka_tls import KafkaTLSBroker

    with KafkaTLSBroker(ca=tls_ca) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_mtls_broker(tls_ca: trustme.CA) -> Iterator[KafkaTLSBroker]:
    """Like ``kafka_tls_broker``, but a client must present a certificate from ``tls_ca``
    (``info.tls_options(client_cert=True)``)."""
    from ._kafka_tls import KafkaTLSBroker

    with KafkaTLSBroker(ca=tls_ca, require_client_cert=True) as broker:
        yield broker


@pytest.fixture(scope="session")
def mail_servers(tls_ca: trustme.CA) -> Iterator[MailServers]:
    """Private Dovecot and Postfix for the session (needs root for Postfix).

    Connection details, users (alice and bob at ``example.test``), the LMTP socket and the
    Maildir base are in ``mail_servers.info`` (:class:`~trionet.testing.MailInfo`). Make
    bad-password attempts and "remote client" checks from
    :func:`~trionet.testing.fresh_loopback_address`.
    """
    from ._servers import MailServers

    with MailServers(ca=tls_ca) as servers:
        yield servers


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Trace with a fresh OpenTelemetry SDK provider for one test and collect the spans.

    ``span_exporter.get_finished_spans()`` lists the spans trionet ended during the test (the
    provider is given to :func:`trionet.tracing.installed`, not set globally).
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from .. import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.installed(provider):
        yield exporter
    provider.shutdown()
