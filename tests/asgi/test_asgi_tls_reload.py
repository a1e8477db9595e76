"""``serve(..., tls=...)``: HTTPS from trionet's ``tls=`` vocabulary, and certificate reload
without a restart (a :class:`~trionet.tls.CertificateReloader`), on both trio workers, with real
TLS clients over 127.0.0.1: with SNI (``localhost``) and without (an IP address sends none)."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from asgi_support import running_server

from trionet.asgi import ASGIApplication, Request, Response, serve
from trionet.errors import ConfigurationError
from trionet.tls import CertificateReloader, TLSOptions

app = ASGIApplication()


@app.route("/hello")
async def hello(request: Request) -> Response:
    return Response.text("hello")


def _issue(ca: trustme.CA, directory: Path) -> bytes:
    """A new certificate for 127.0.0.1 and localhost into the server's files; its
    fingerprint (SHA-256 of the DER)."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).digest()


class Connection:
    """A kept-alive HTTPS/1.1 connection that sends ``GET /hello`` requests."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream

    @property
    def fingerprint(self) -> bytes:
        der = self.stream.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).digest()

    async def get(self) -> bytes:
        await self.stream.send_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\nhello"):
            chunk = await self.stream.receive_some()
            assert chunk, data
            data += chunk
        return data


@asynccontextmanager
async def connect(port: int, client: ssl.SSLContext, host: str) -> AsyncIterator[Connection]:
    """A TLS connection to 127.0.0.1:*port*; *host* ``localhost`` sends SNI, ``127.0.0.1``
    (an IP address) sends none. Both are verified against the certificate."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, client, server_hostname=host)
    async with stream:
        await stream.do_handshake()
        yield Connection(stream)


def _client(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"], ids=["sni", "no-sni"])
async def test_reload_reaches_new_connections_and_open_ones_keep_theirs(
    tmp_path: Path, host: str
) -> None:
    ca = trustme.CA()
    first = _issue(ca, tmp_path)
    reloader = CertificateReloader(TLSOptions(cert_file=tmp_path / "cert.pem",
                                              key_file=tmp_path / "key.pem"))
    client = _client(ca)
    with trio.fail_after(20):
        async with running_server(app, tls=reloader) as address:
            assert address.url.startswith("https://")
            async with connect(address.port, client, host) as before:
                assert (await before.get()).startswith(b"HTTP/1.1 200")
                assert before.fingerprint == first

                second = _issue(ca, tmp_path)
                reloader.reload()
                async with connect(address.port, client, host) as after:
                    assert after.fingerprint == second
                    assert (await after.get()).startswith(b"HTTP/1.1 200")
                # The connection opened before goes on with its certificate.
                assert (await before.get()).startswith(b"HTTP/1.1 200")
                assert before.fingerprint == first

            # A broken file: reload() raises, the last good certificate stays in use.
            (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
            with pytest.raises(ssl.SSLError):
                reloader.reload()
            async with connect(address.port, client, host) as later:
                assert later.fingerprint == second
                assert (await later.get()).startswith(b"HTTP/1.1 200")

            # Contexts trionet builds offer HTTP/2 (ALPN), also after a reload.
            async with httpx.AsyncClient(http2=True, verify=client) as http:
                response = await http.get(f"https://{host}:{address.port}/hello")
            assert response.http_version == "HTTP/2" and response.text == "hello"


async def test_client_certificates_stay_required_after_reload(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    _issue(ca, tmp_path)
    reloader = CertificateReloader(TLSOptions(
        cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem",
        ca_file=tmp_path / "ca.pem", require_client_cert=True,
    ))
    anonymous = _client(ca)
    with_cert = _client(ca, ca.issue_cert("client@example.test"))
    with trio.fail_after(20):
        async with running_server(app, tls=reloader) as address:
            for round_ in range(2):
                if round_:
                    second = _issue(ca, tmp_path)
                    reloader.reload()
                async with connect(address.port, with_cert, "127.0.0.1") as conn:
                    assert (await conn.get()).startswith(b"HTTP/1.1 200")
                    if round_:
                        assert conn.fingerprint == second
                # TLS 1.3: the client's handshake ends before the server checks its
                # (missing) certificate, so the refusal shows on the first read.
                with pytest.raises(trio.BrokenResourceError):
                    async with connect(address.port, anonymous, "127.0.0.1") as conn:
                        await conn.get()


async def test_tls_options_and_a_plain_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    fingerprint = _issue(ca, tmp_path)
    options = TLSOptions(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    client = _client(ca)
    context = options.server_context()
    for tls in (options, context):
        with trio.fail_after(20):
            async with running_server(app, tls=tls) as address, \
                    connect(address.port, client, "localhost") as conn:
                assert (await conn.get()).startswith(b"HTTP/1.1 200")
                assert conn.fingerprint == fingerprint


async def test_tls_and_a_config_certificate_do_not_mix(tmp_path: Path) -> None:
    from hypercorn.config import Config

    ca = trustme.CA()
    _issue(ca, tmp_path)
    config = Config()
    config.certfile = str(tmp_path / "cert.pem")
    config.keyfile = str(tmp_path / "key.pem")
    options = TLSOptions(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    with pytest.raises(ConfigurationError, match="not both"):
        await serve(app, "127.0.0.1:0", config=config, tls=options)
    only_ca = Config()
    only_ca.ca_certs = str(tmp_path / "cert.pem")  # would be ignored by tls=
    with pytest.raises(ConfigurationError, match="not both"):
        await serve(app, "127.0.0.1:0", config=only_ca, tls=options)
