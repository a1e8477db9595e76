"""The HTTPS example of docs/howto/hypercorn.rst (and docs/howto/testing.rst's ``tls_ca``).

The pages include parts of this file; keep the ``# [name]`` markers where they are.
"""

from __future__ import annotations

import ssl
from functools import partial
from pathlib import Path

import httpx
import trio
import trustme
from hypercorn.config import Config

from trionet.asgi import ASGIApplication, Request, Response, serve

app = ASGIApplication()


@app.route("/hello")
async def hello(request: Request) -> Response:
    return Response.json({"http_version": request.scope["http_version"]})


# [https]
def https_config(tls_ca: trustme.CA, directory: Path) -> Config:
    """A Hypercorn configuration for HTTPS, with a certificate issued by *tls_ca*."""
    certificate = tls_ca.issue_cert("localhost", "127.0.0.1")
    certificate.private_key_pem.write_to_path(directory / "key.pem")
    certificate.private_key_and_cert_chain_pem.write_to_path(directory / "cert.pem")
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.certfile = str(directory / "cert.pem")
    config.keyfile = str(directory / "key.pem")
    config.graceful_timeout = 2.0  # seconds in-flight requests get when shutdown begins
    return config  # ALPN offers h2 and http/1.1 by default


async def test_https_and_http2(tls_ca: trustme.CA, tmp_path: Path) -> None:
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)  # trust the test CA, and only for this client
    async with trio.open_nursery() as nursery:
        # nursery.start passes no keyword arguments: bind them with functools.partial
        address = await nursery.start(partial(serve, app, config=https_config(tls_ca, tmp_path)))
        assert address.url.startswith("https://")
        async with httpx.AsyncClient(verify=client_context, http2=True) as client:
            response = await client.get(f"{address.url}/hello")
        assert response.http_version == "HTTP/2"
        assert response.json() == {"http_version": "2"}
        nursery.cancel_scope.cancel()
# [/https]
