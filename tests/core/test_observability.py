"""The correlation id follows work through components and into log records."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.lowlevel

from trionet.aproto import AsyncClient, HandlerClient, Packet, Server
from trionet.asgi import ASGIApplication, Request, RequestIdMiddleware, Response, TestClient
from trionet.observability import (
    CorrelationIdFilter,
    configure_logging,
    correlation_scope,
    current_correlation_id,
)


def test_scope_and_filter(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("trionet.test.obs")
    caplog.handler.addFilter(CorrelationIdFilter())
    with caplog.at_level(logging.INFO, logger="trionet.test.obs"):
        assert current_correlation_id() is None
        with correlation_scope("job-1"):
            assert current_correlation_id() == "job-1"
            logger.info("inside")
        logger.info("outside")
    assert [getattr(r, "correlation_id", None) for r in caplog.records] == ["job-1", "-"]


def test_configure_logging_formats_the_id(capsys: pytest.CaptureFixture[str]) -> None:
    handler = configure_logging(logging.INFO, logger="trionet.test.configured")
    try:
        with correlation_scope("abc"):
            logging.getLogger("trionet.test.configured").info("hello")
    finally:
        logging.getLogger("trionet.test.configured").removeHandler(handler)
    assert "[abc] hello" in capsys.readouterr().err


async def test_tasks_inherit_and_isolate_the_id() -> None:
    seen: list[str | None] = []

    async def child() -> None:
        seen.append(current_correlation_id())

    with correlation_scope("parent"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
    assert seen == ["parent"]
    assert current_correlation_id() is None


async def test_http_request_id_is_the_correlation_id() -> None:
    app = ASGIApplication()

    @app.route("/whoami")
    async def whoami(request: Request) -> Response:
        return Response.json({"correlation_id": current_correlation_id()})

    app.add_middleware(RequestIdMiddleware)
    async with TestClient(app) as client:
        response = await client.get("/whoami", headers={"x-request-id": "req-77"})
    assert response.json() == {"correlation_id": "req-77"}


async def test_aproto_session_id_is_the_correlation_id() -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def whoami(client: HandlerClient, packet: Packet) -> None:
        await client.send({"correlation_id": current_correlation_id(),
                           "session": str(client.session.session_id)})

    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with AsyncClient(tls=False) as client:
            await client.connect("127.0.0.1", port)
            reply = await client.request({"cmd": "whoami"})
        server.stop()
    assert reply["correlation_id"] == reply["session"]


async def test_correlation_id_travels_over_the_bus() -> None:
    from trionet.bus import BusMessage, BusSocket, DistributedApplication

    app = DistributedApplication("memory://observability-test")
    seen: list[tuple[str | None, str | None]] = []

    @app.application("jobs/+")
    async def worker(message: BusMessage, socket: BusSocket) -> None:
        seen.append((current_correlation_id(), message.headers.get("x-correlation-id")))
        await socket.reply(message, b"done")

    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        from trionet.bus import SocketProviderFactory

        provider = SocketProviderFactory.from_url("memory://observability-test")
        async with provider.create_socket(name="caller") as socket:
            with correlation_scope("http-req-9"):
                reply = await socket.request(BusMessage(b"job", "jobs/a"), timeout=5)
            assert reply.payload == b"done"
            # Outside any unit of work, nothing is added.
            await socket.request(BusMessage(b"job", "jobs/b"), timeout=5)
        app.stop()
    assert seen[0] == ("http-req-9", "http-req-9")
    assert seen[1][1] is None
    assert seen[1][0] is not None  # the message's own correlation id (the request's)


async def test_channel_request_id_is_the_correlation_id() -> None:
    from functools import partial

    from trionet.channel import Channel, open_connection, start_server

    async def async_handler(content: object) -> object:
        await trio.lowlevel.checkpoint()
        return current_correlation_id()

    async def handle(channel: Channel) -> None:
        await channel.serve(lambda content: current_correlation_id() if content == "sync"
                            else async_handler(content))

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(partial(start_server, ("127.0.0.1", 0), handle))
        async with open_connection(address) as channel:
            first = await channel.send("sync")
            second = await channel.send("async")
        nursery.cancel_scope.cancel()
    assert isinstance(first, str)
    assert isinstance(second, str)
    assert first.startswith("127.0.0.1:")
    assert first.split("#")[1] != second.split("#")[1]  # one id per request
