"""Host routing, the HTTPS redirect and per-route timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from trionet.asgi import (
    ASGIApplication,
    Host,
    HTTPException,
    HTTPSRedirectMiddleware,
    Receive,
    Request,
    Response,
    Router,
    Scope,
    Send,
    TestClient,
    WebSocket,
    WebSocketRejected,
)
from trionet.asgi._hosts import MAX_HOST_LENGTH, parse_host


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM", ("example.com", None)),
        ("example.com.:8000", ("example.com", 8000)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8443", ("[::1]", 8443)),
        ("my_host", ("my_host", None)),
        ("", None),
        (None, None),
        ("evil.com/path", None),
        ("evil.com@good.com", None),
        ("a b", None),
        ("host:0", None),
        ("host:99999", None),
        ("host:", None),
        ("a..b", None),
        ("-x", None),
        ("x\r\nSet-Cookie: a=b", None),
        ("a" * (MAX_HOST_LENGTH + 1), None),
    ],
)
def test_parse_host_accepts_only_host_names(
    value: str | None, expected: tuple[str, int | None] | None
) -> None:
    assert parse_host(value) == expected


async def test_host_routing_with_parameters_and_sub_apps() -> None:
    api = Router()

    @api.route("/users/{user_id:int}")
    async def user(request: Request, user_id: int) -> Response:
        return Response.json({"api": user_id, "tenant": request.path_params.get("tenant")})

    @api.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("api socket")
        await websocket.close()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await Response.text(f"raw {scope['path']}").send_to(scope, receive, send)

    router = Router()
    router.host("api.example.com", api, name="api")
    tenants = Router()

    @tenants.route("/")
    async def tenant_home(request: Request) -> Response:
        # As with a mount's prefix, the host's parameters are in path_params.
        return Response.text(f"home of {request.path_params['tenant']}")

    router.host("{tenant}.tenants.example.com", tenants)
    router._add(Host("static.example.com", raw_app))

    @router.route("/")
    async def fallback(request: Request) -> Response:
        return Response.text("default site")

    async with TestClient(ASGIApplication(router)) as client:
        response = await client.get("http://API.example.com:8000/users/3")
        assert response.json() == {"api": 3, "tenant": None}
        assert (await client.get("http://acme.tenants.example.com/")).text == "home of acme"
        assert (await client.get("http://static.example.com/a/b")).text == "raw /a/b"
        assert (await client.get("http://www.example.com/")).text == "default site"
        # A malformed Host matches no Host entry.
        bad = await client.get("/", headers={"host": "api.example.com/x"})
        assert bad.text == "default site"
        # A host's router answers its own 404; the request does not fall through.
        assert (await client.get("http://api.example.com/")).status_code == 404
        # Too deep for a one-label parameter.
        deep = await client.get("http://a.b.tenants.example.com/")
        assert deep.text == "default site"
        async with client.websocket_connect("ws://api.example.com/ws") as websocket:
            assert await websocket.receive() == "api socket"
        with pytest.raises(WebSocketRejected):
            async with client.websocket_connect("ws://www.example.com/ws"):
                pass
    assert router.url_for("api:user", user_id=5) == "/users/5"
    assert router.url_for("tenant_home") == "/"
    with pytest.raises(ValueError):
        Host("example.com:80", raw_app)
    with pytest.raises(ValueError):
        Host("{a}.{a}.com", raw_app)


async def test_https_redirect_keeps_host_path_and_query() -> None:
    router = Router()

    @router.route("/{rest:path}", methods=["GET", "POST"])
    async def anything(request: Request, rest: str) -> Response:
        return Response.text(f"secure {rest}")

    @router.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    app = ASGIApplication(router)
    app.add_middleware(HTTPSRedirectMiddleware, exempt_paths=["/.well-known/acme-challenge/"])
    other_port = ASGIApplication(router)
    other_port.add_middleware(HTTPSRedirectMiddleware, https_port=8443, status_code=308)
    async with TestClient(app) as client:
        response = await client.post("http://Example.com:8000/a%20b/c?x=1&y=%2F")
        assert response.status_code == 307
        assert response.headers["location"] == "https://example.com/a%20b/c?x=1&y=%2F"
        secure = await client.get("https://example.com/a")
        assert (secure.status_code, secure.text) == (200, "secure a")
        exempt = await client.get("http://example.com/.well-known/acme-challenge/token")
        assert exempt.status_code == 200
        bad = await client.get("/x", headers={"host": "evil.com/x"})
        assert bad.status_code == 400
        ipv6 = await client.get("/", headers={"host": "[::1]:8000"})
        assert ipv6.headers["location"] == "https://[::1]/"
        with pytest.raises(WebSocketRejected):
            async with client.websocket_connect("ws://example.com/ws"):
                pass
        async with client.websocket_connect("wss://example.com/ws"):
            pass
    async with TestClient(other_port) as client:
        response = await client.get("http://example.com/p")
        assert (response.status_code, response.headers["location"]) == (
            308, "https://example.com:8443/p"
        )
    with pytest.raises(ValueError):
        HTTPSRedirectMiddleware(router, status_code=303)


async def test_per_route_timeout(autojump_clock: trio.abc.Clock) -> None:
    # Virtual time: the deadlines fire only once everything else is waiting, so whether the
    # stream's first chunk went out before its deadline never depends on the machine's load.
    router = Router()
    cancelled: list[str] = []

    @router.route("/slow", timeout=5)
    async def slow(request: Request) -> Response:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append("slow")
        raise AssertionError("unreachable")

    @router.route("/quick", timeout=30)
    async def quick(request: Request) -> Response:
        return Response.text("in time")

    async def stalls() -> AsyncIterator[bytes]:
        yield b"first"
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append("stream")
        yield b"never"

    @router.route("/stream", timeout=5)
    async def stream(request: Request) -> Response:
        return Response.stream(stalls())

    @router.route("/untimed")
    async def untimed(request: Request) -> Response:
        return Response.text("no limit")

    async with TestClient(ASGIApplication(router)) as client:
        response = await client.get("/slow")
        assert (response.status_code, response.json()) == (504, {"error": "request timed out"})
        assert cancelled == ["slow"]
        assert (await client.get("/quick")).text == "in time"
        assert (await client.get("/untimed")).text == "no limit"
        # After the response started, the timeout aborts it (the server closes the connection).
        with pytest.raises(HTTPException) as caught:
            await client.get("/stream")
        assert caught.value.status_code == 504
        assert cancelled == ["slow", "stream"]
    with pytest.raises(ValueError):
        router.add_route("/x", slow, timeout=0)
