"""Helpers shared by the ASGI tests: a real Hypercorn trio server on loopback, raw HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio

from trionet.asgi import ASGIApp, BoundAddress, serve

if TYPE_CHECKING:
    from hypercorn.config import Config


def hypercorn_config(**settings: Any) -> Config:
    """A Hypercorn ``Config`` bound to a free loopback port, with ``settings`` set on it."""
    from hypercorn.config import Config

    config = Config()
    config.bind = ["127.0.0.1:0"]
    for name, value in settings.items():
        setattr(config, name, value)
    return config


def use_worker(monkeypatch: pytest.MonkeyPatch, worker: str) -> str:
    """Make ``serve()`` run ``worker`` in this test (and in its subprocesses): ``trionet``,
    ``hypercorn``, or ``trionet-hc11`` (trionet's worker, HTTP/1.1 by Hypercorn's protocol)."""
    if worker == "trionet-hc11":
        monkeypatch.setenv("TRIONET_ASGI_WORKER", "trionet")
        monkeypatch.setenv("TRIONET_ASGI_HTTP1", "hypercorn")
    else:
        monkeypatch.setenv("TRIONET_ASGI_WORKER", worker)
        monkeypatch.delenv("TRIONET_ASGI_HTTP1", raising=False)
    return worker


@asynccontextmanager
async def running_server(app: ASGIApp, **kwargs: Any) -> AsyncIterator[BoundAddress]:
    """Serve ``app`` with :func:`trionet.asgi.serve` on a free loopback port for the block."""
    async with trio.open_nursery() as nursery:
        address: BoundAddress = await nursery.start(
            _serve_with_kwargs, app, kwargs
        )
        yield address
        nursery.cancel_scope.cancel()


async def _serve_with_kwargs(
    app: ASGIApp, kwargs: dict[str, Any], *, task_status: trio.TaskStatus[BoundAddress]
) -> None:
    await serve(app, "127.0.0.1:0", task_status=task_status, **kwargs)


async def raw_http(
    address: BoundAddress, request: bytes, *, read_until_close: bool = True
) -> bytes:
    """Send raw bytes to the server and return everything it answers until it closes."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
            if not read_until_close and b"\r\n\r\n" in data:
                break
        return data
