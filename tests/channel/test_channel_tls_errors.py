"""A Channel client's failed TLS handshake says what went wrong and for which host (issue: an
empty trio.BrokenResourceError, the certificate error only in __cause__)."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
import trustme

from trionet.channel import Channel, open_connection, start_server
from trionet.errors import TLSError, TLSNotSpoken, TLSVerificationError


async def _echo(channel: Channel) -> None:
    async for request in channel:
        await request.reply(request.content)


def _server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


async def test_an_untrusted_certificate_names_the_host_and_the_reason(
    tls_ca: trustme.CA,
) -> None:
    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(partial(start_server, ("127.0.0.1", 0), _echo,
                                             ssl_context=_server_context(tls_ca, "localhost")))
        client_context = ssl.create_default_context()  # does not trust tls_ca
        with pytest.raises(TLSVerificationError) as caught:
            async with open_connection(addr, ssl_context=client_context,
                                       server_hostname="localhost"):
                pass
        message = str(caught.value)
        assert "'localhost'" in message and "could not be verified" in message
        assert "issuer" in message  # the ssl module's reason
        assert caught.value.host == "localhost"
        assert isinstance(caught.value, trio.BrokenResourceError)  # what callers caught before
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        nursery.cancel_scope.cancel()


async def test_a_hostname_mismatch_names_the_host(tls_ca: trustme.CA) -> None:
    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(partial(start_server, ("127.0.0.1", 0), _echo,
                                             ssl_context=_server_context(tls_ca, "other.test")))
        client_context = ssl.create_default_context()
        tls_ca.configure_trust(client_context)
        with pytest.raises(TLSVerificationError, match=r"'localhost'.*[Hh]ostname mismatch"):
            async with open_connection(addr, ssl_context=client_context,
                                       server_hostname="localhost"):
                pass
        # the right name works
        async with open_connection(addr, ssl_context=client_context,
                                   server_hostname="other.test") as channel:
            assert await channel.send("hi") == "hi"
        nursery.cancel_scope.cancel()


async def test_a_plain_server_is_named_as_not_speaking_tls(tls_ca: trustme.CA) -> None:
    async def plain(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, plain, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        client_context = ssl.create_default_context()
        tls_ca.configure_trust(client_context)
        with pytest.raises(TLSNotSpoken, match="does not speak TLS") as caught:
            async with open_connection(("127.0.0.1", port), ssl_context=client_context,
                                       server_hostname="localhost"):
                pass
        assert isinstance(caught.value, TLSError)
        nursery.cancel_scope.cancel()
