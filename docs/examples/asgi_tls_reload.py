"""HTTPS with a certificate that is renewed while the server runs.

Run it as a program: it makes a throw-away CA with ``trustme``, serves on a free loopback port
with a :class:`~trionet.tls.CertificateReloader`, renews the certificate files, reloads, and
shows that a new connection gets the new certificate while the one opened before goes on.
"""

import hashlib
import ssl
import tempfile
from functools import partial
from pathlib import Path

import trio
import trustme

from trionet.asgi import ASGIApplication, BoundAddress, Request, Response, serve
from trionet.tls import CertificateReloader, TLSOptions

app = ASGIApplication()


@app.route("/")
async def index(request: Request) -> Response:
    return Response.text("hello over TLS")


def renew(ca: trustme.CA, directory: Path) -> None:
    """What certbot & co. do: write a new certificate and key over the old files."""
    certificate = ca.issue_cert("127.0.0.1")
    certificate.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    certificate.private_key_pem.write_to_path(str(directory / "key.pem"))


async def fingerprint_and_get(address: BoundAddress, client: ssl.SSLContext,
                              stream: trio.SSLStream[trio.SocketStream] | None = None
                              ) -> tuple[str, trio.SSLStream[trio.SocketStream]]:
    if stream is None:
        tcp = await trio.open_tcp_stream(address.host, address.port)
        stream = trio.SSLStream(tcp, client, server_hostname="127.0.0.1")
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    answer = b""
    while not answer.endswith(b"hello over TLS"):
        answer += await stream.receive_some()
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()[:16], stream


async def main() -> None:
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        renew(ca, directory)
        reloader = CertificateReloader(TLSOptions(cert_file=directory / "cert.pem",
                                                  key_file=directory / "key.pem"))
        async with trio.open_nursery() as nursery:
            # nursery.start passes no keyword arguments: bind tls= with functools.partial
            address = await nursery.start(partial(serve, app, "127.0.0.1:0", tls=reloader))
            old, kept = await fingerprint_and_get(address, client)

            renew(ca, directory)
            reloader.reload()  # or: await nursery.start(reloader.reload_on_signal) + SIGHUP

            new, fresh = await fingerprint_and_get(address, client)
            still, _ = await fingerprint_and_get(address, client, kept)
            print(f"before: {old}, new connection: {new}, kept-alive connection: {still}")
            assert new != old and still == old
            await kept.aclose()
            await fresh.aclose()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
