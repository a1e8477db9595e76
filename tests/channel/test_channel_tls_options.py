"""The tls= vocabulary of Channel and RPC (issue 23: "TLS everywhere", aiomas's mTLS helper):
client certificates on both sides, a client without one refused, and a certificate reloaded
while the server runs (new connections get it, open ones keep theirs)."""

from __future__ import annotations

import os
import signal
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trionet import rpc
from trionet.channel import Channel, open_connection, start_server
from trionet.errors import ChannelClosed, ConfigurationError, TLSError
from trionet.tls import CertificateReloader, TLSOptions, client_context, server_context


class Files:
    """A private CA, and PEM files of certificates it issued, under *tmp*."""

    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.tmp = tmp
        self.ca_file = str(tmp / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def issue(self, name: str, *identities: str) -> str:
        path = str(self.tmp / f"{name}.pem")
        self.ca.issue_cert(*identities).private_key_and_cert_chain_pem.write_to_path(path)
        return path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


async def echo(channel: Channel) -> None:
    async for request in channel:
        await request.reply(request.content)


def names(stream: Any) -> list[str]:
    return [value for kind, value in stream.getpeercert()["subjectAltName"] if kind == "DNS"]


async def test_mutual_tls_on_a_channel(files: Files) -> None:
    server_tls = TLSOptions(ca_file=files.ca_file, cert_file=files.issue("server", "localhost"),
                            require_client_cert=True)
    client_tls = TLSOptions(ca_file=files.ca_file, cert_file=files.issue("client", "alice.test"))
    seen: list[list[str]] = []

    async def handle(channel: Channel) -> None:
        seen.append(names(channel.stream))  # the server knows who the client is
        await echo(channel)

    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(partial(start_server, ("127.0.0.1", 0), handle,
                                             tls=server_tls))
        async with open_connection(addr, tls=client_tls, server_hostname="localhost") as channel:
            assert await channel.send("hi") == "hi"
            assert names(channel.stream) == ["localhost"]
        assert seen == [["alice.test"]]

        # a client without a certificate is refused: the handshake or its first request fails
        without = TLSOptions(ca_file=files.ca_file)
        with pytest.raises((TLSError, ChannelClosed, trio.BrokenResourceError)):
            async with open_connection(addr, tls=without, server_hostname="localhost") as channel:
                await channel.send("hi")
        # and the old alias still works, with a context built by the vocabulary
        async with open_connection(addr, ssl_context=client_context(client_tls),
                                   server_hostname="localhost") as channel:
            assert await channel.send(1) == 1
        nursery.cancel_scope.cancel()


async def test_rpc_with_client_certificates_both_ways(files: Files) -> None:
    class Root:
        router = rpc.Service()

        @rpc.expose
        def hello(self, name: str) -> str:
            return f"hello {name}"

    class Caller:
        router = rpc.Service()

        @rpc.expose
        def whoami(self) -> str:
            return "the client"

    called_back: list[str] = []

    async def on_connect(peer: rpc.RpcClient) -> None:
        called_back.append(await peer.remote.whoami())

    server_tls = TLSOptions(ca_file=files.ca_file, cert_file=files.issue("server", "localhost"),
                            require_client_cert=True)
    client_tls = TLSOptions(ca_file=files.ca_file, cert_file=files.issue("client", "alice.test"))
    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(partial(rpc.start_server, ("127.0.0.1", 0), Root(),
                                             on_connect, tls=server_tls))
        async with rpc.open_connection(addr, rpc_service=Caller(), tls=client_tls,
                                       server_hostname="localhost") as client:
            assert await client.remote.hello("mtls") == "hello mtls"
        assert called_back == ["the client"]
        with pytest.raises((TLSError, ChannelClosed, trio.BrokenResourceError)):
            async with rpc.open_connection(addr, tls=TLSOptions(ca_file=files.ca_file),
                                           server_hostname="localhost") as client:
                await client.remote.hello("nobody")
        nursery.cancel_scope.cancel()


async def test_a_reloaded_certificate_reaches_new_connections_only(files: Files) -> None:
    cert = files.issue("server", "old.test")
    reloader = CertificateReloader(TLSOptions(cert_file=cert))
    trust = TLSOptions(ca_file=files.ca_file)
    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(partial(start_server, ("127.0.0.1", 0), echo,
                                             tls=reloader))
        async with open_connection(addr, tls=trust, server_hostname="old.test") as old:
            assert names(old.stream) == ["old.test"]
            files.issue("server", "new.test")  # the same file, renewed
            reloader.reload()
            assert reloader.reloads == 1
            async with open_connection(addr, tls=trust, server_hostname="new.test") as new:
                assert names(new.stream) == ["new.test"]
                assert await new.send("new") == "new"
            assert await old.send("old") == "old"  # the open connection keeps its context

            # a broken file keeps the current certificate
            await trio.Path(cert).write_text("not a certificate")
            with pytest.raises(ssl.SSLError):
                reloader.reload()
            async with open_connection(addr, tls=trust, server_hostname="new.test") as new:
                assert await new.send(2) == 2
        nursery.cancel_scope.cancel()


async def test_sighup_reloads(files: Files) -> None:
    cert = files.issue("server", "old.test")
    reloader = CertificateReloader(TLSOptions(cert_file=cert))
    async with trio.open_nursery() as nursery:
        await nursery.start(reloader.reload_on_signal)
        files.issue("server", "new.test")
        os.kill(os.getpid(), signal.SIGHUP)
        await trio.testing.wait_all_tasks_blocked()
        assert reloader.reloads == 1
        nursery.cancel_scope.cancel()
    context = server_context(reloader)
    assert context is reloader.context


def test_the_vocabulary_refuses_what_would_not_work(files: Files) -> None:
    with pytest.raises(ConfigurationError, match="cert_file"):
        server_context(TLSOptions(ca_file=files.ca_file))
    with pytest.raises(ConfigurationError, match="cert_file"):
        server_context(True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ca_file"):
        TLSOptions(cert_file=files.issue("s", "x.test"), require_client_cert=True).server_context()
    context = TLSOptions(cert_file=files.issue("s", "x.test"), ca_file=files.ca_file,
                         require_client_cert=True).server_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    client = client_context(True)
    assert client is not None and client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname


async def test_tls_and_ssl_context_are_one_or_the_other(files: Files) -> None:
    context = ssl.create_default_context()
    with pytest.raises(TypeError, match="not both"):
        async with open_connection(("127.0.0.1", 1), tls=True, ssl_context=context):
            pass
    with pytest.raises(TypeError, match="not both"):
        await start_server(("127.0.0.1", 0), print, tls=context,  # type: ignore[arg-type]
                           ssl_context=context)
