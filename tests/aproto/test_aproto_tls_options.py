"""AProto's Server and clients take the trionet.tls vocabulary (issue 23, "TLS everywhere"):
mutual TLS with TLSOptions, a client without a certificate refused, a reloaded certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trustme
from aproto_helpers import start

from trionet.aproto import AsyncClient, HandlerClient, Packet, Server
from trionet.errors import ConfigurationError, TLSError
from trionet.tls import CertificateReloader, TLSArgument, TLSOptions


def issue(ca: trustme.CA, path: Path, *identities: str) -> str:
    ca.issue_cert(*identities).private_key_and_cert_chain_pem.write_to_path(path)
    return str(path)


def echo_server(tls: object) -> Server:
    server = Server("127.0.0.1", 0, logging_level=100, tls=tls)  # type: ignore[arg-type]

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        cert = client.peer_certificate
        who = [v for k, v in cert["subjectAltName"] if k == "DNS"] if cert else []
        await client.send({"n": packet["n"], "client": who})

    return server


async def request(tls: TLSArgument, port: int, name: str = "localhost") -> object:
    async with AsyncClient(tls=tls) as client:
        await client.connect("127.0.0.1", port, server_hostname=name)
        return await client.request({"n": 1})


async def test_mutual_tls_and_a_refused_client(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    server_tls = TLSOptions(ca_file=ca_file, cert_file=issue(ca, tmp_path / "s.pem", "localhost"),
                            require_client_cert=True)
    port = await start(nursery, echo_server(server_tls))
    alice = TLSOptions(ca_file=ca_file, cert_file=issue(ca, tmp_path / "c.pem", "alice.test"))
    assert await request(alice, port) == {"n": 1, "client": ["alice.test"]}
    with pytest.raises((TLSError, trio.BrokenResourceError, trio.ClosedResourceError)):
        await request(TLSOptions(ca_file=ca_file), port)  # no client certificate
    assert await request(alice, port) == {"n": 1, "client": ["alice.test"]}  # still serving


async def test_reload_without_a_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    cert = issue(ca, tmp_path / "s.pem", "old.test")
    reloader = CertificateReloader(TLSOptions(cert_file=cert))
    server = echo_server(reloader)
    port = await start(nursery, server)
    trust = TLSOptions(ca_file=ca_file)
    async with AsyncClient(tls=trust) as old:
        await old.connect("127.0.0.1", port, server_hostname="old.test")
        assert await old.request({"n": 1}) == {"n": 1, "client": []}
        issue(ca, tmp_path / "s.pem", "new.test")
        reloader.reload()
        assert await request(trust, port, "new.test") == {"n": 1, "client": []}
        with pytest.raises(TLSError, match=r"old\.test"):
            await request(trust, port, "old.test")
        assert await old.request({"n": 2}) == {"n": 2, "client": []}


def test_a_server_needs_a_certificate() -> None:
    with pytest.raises(ConfigurationError):
        Server("127.0.0.1", 0, tls=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Server("127.0.0.1", 0, tls=TLSOptions(ca_file="ca.pem"))
    with pytest.raises(ConfigurationError):
        AsyncClient(tls=None)  # type: ignore[arg-type]
