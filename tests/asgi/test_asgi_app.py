"""ASGIApplication: the seed's subclass API, error handling, lifespan and background tasks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from trionet.asgi import (
    ASGIApplication,
    HTTPException,
    Message,
    Request,
    Response,
    Router,
    Send,
    TestClient,
    ValidationError,
)
from trionet.errors import ASGIError


# The seed's first example, verbatim apart from the import.
class App(ASGIApplication):
    async def handle_request(self, request: Request) -> Response:
        if request.path == "/":
            return Response.json({"message": "Welcome to mtaio"})
        return Response.text("Not Found", status_code=404)


async def test_seed_subclass_example() -> None:
    app = App()
    async with TestClient(app) as client:
        response = await client.get("/")
        assert response.status_code == 200
        assert response.json() == {"message": "Welcome to mtaio"}
        response = await client.get("/elsewhere")
        assert (response.status_code, response.text) == (404, "Not Found")


# The seed's error-handling example, with a user-defined ValidationError.
class MyValidationError(Exception):
    pass


class SeedErrorApp(ASGIApplication):
    async def handle_request(self, request: Request) -> Response:
        if request.path == "/invalid":
            raise MyValidationError("age must be positive")
        if request.path == "/missing":
            raise HTTPException(404, "no such thing")
        if request.path == "/teapot":
            raise HTTPException(418, headers={"X-Brew": "no"})
        raise RuntimeError("boom")

    async def handle_error(self, error: Exception, send: Send) -> None:
        if isinstance(error, MyValidationError):
            response = Response.json({"error": str(error)}, status_code=400)
        else:
            response = Response.json({"error": "Internal Server Error"}, status_code=500)
        await response(send)


async def test_seed_handle_error_example_and_http_exception() -> None:
    client = TestClient(SeedErrorApp())
    response = await client.get("/invalid")
    assert (response.status_code, response.json()) == (400, {"error": "age must be positive"})
    response = await client.get("/boom")
    assert (response.status_code, response.json()) == (500, {"error": "Internal Server Error"})
    # HTTPException keeps its status even though handle_error answers 500 for "the rest".
    response = await client.get("/missing")
    assert (response.status_code, response.json()) == (404, {"error": "no such thing"})
    response = await client.get("/teapot")
    assert response.status_code == 418
    assert response.json() == {"error": "I'm a Teapot"}
    assert response.headers["x-brew"] == "no"


async def test_mtaio_asgi_error_with_status_code_answers_that_status() -> None:
    # Issue 23: mtaio's `ASGIError("...", status_code=404)` raised TypeError, so ported code
    # answered 500 whatever the status.
    router = Router()

    @router.route("/users/{user_id:int}")
    async def user(request: Request, user_id: int) -> Response:
        raise ASGIError(f"no user {user_id}", status_code=404)

    @router.route("/broken")
    async def broken(request: Request) -> Response:
        raise ASGIError("backend down", status_code=503)

    class SeedRoutedApp(SeedErrorApp):
        handle_request = ASGIApplication.handle_request

    # The seed's handle_error answers 500 for "the rest": the status still wins, as for
    # HTTPException.
    for app in (SeedRoutedApp(router), ASGIApplication(router), router):
        client = TestClient(app)
        response = await client.get("/users/7")
        assert (response.status_code, response.json()) == (404, {"error": "no user 7"})
        response = await client.get("/broken")
        assert (response.status_code, response.json()) == (503, {"error": "backend down"})
    error = ASGIError("gone", status_code=410)
    assert (error.status_code, error.fault, str(error)) == (410, "remote", "gone")
    assert ASGIError("x", status_code=500).fault == "local"
    # The existing signatures keep working, without a status.
    assert ASGIError("plain").status_code is None
    assert ASGIError("mine", fault="local").fault == "local"
    assert HTTPException(404).status_code == 404
    with pytest.raises(ValueError):
        ASGIError("x", status_code=200)
    with pytest.raises(TypeError):
        ASGIError("x", status_code="404")  # type: ignore[arg-type]


async def test_default_handle_error(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()

    @router.route("/validation")
    async def validation(request: Request) -> Response:
        raise ValidationError("name is required")

    @router.route("/crash")
    async def crash(request: Request) -> Response:
        raise KeyError("secret detail")

    client = TestClient(ASGIApplication(router))
    response = await client.get("/validation")
    assert (response.status_code, response.json()) == (400, {"error": "name is required"})
    with caplog.at_level(logging.ERROR, logger="trionet.asgi"):
        response = await client.get("/crash")
    assert (response.status_code, response.json()) == (500, {"error": "Internal Server Error"})
    assert "secret detail" not in response.text
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any("secret detail" in str(exc) for exc in logged)


async def test_custom_http_exception_response() -> None:
    class HTMLErrors(ASGIApplication):
        def http_exception_response(self, exc: HTTPException) -> Response:
            return Response.html(f"<h1>{exc.status_code}</h1>", exc.status_code)

    response = await TestClient(HTMLErrors(Router())).get("/nope")
    assert (response.status_code, response.text) == (404, "<h1>404</h1>")
    with pytest.raises(ValueError, match="300-599"):
        HTTPException(200)


async def test_error_after_response_start_is_reraised_not_a_second_start() -> None:
    async def half_then_crash() -> AsyncIterator[bytes]:
        yield b"first chunk"
        raise RuntimeError("mid-stream failure")

    router = Router()

    @router.route("/partial")
    async def partial(request: Request) -> Response:
        return Response.stream(half_then_crash())

    app = ASGIApplication(router)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError

    scope = {"type": "http", "method": "GET", "path": "/partial", "headers": []}
    with pytest.raises(RuntimeError, match="mid-stream failure"):
        await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]

    # The test client surfaces it too: re-raised by default, or as an aborted response.
    with pytest.raises(RuntimeError, match="mid-stream failure"):
        await TestClient(app).get("/partial")
    with pytest.raises(ASGIError, match="stopped in the middle of the response"):
        await TestClient(app, raise_app_exceptions=False).get("/partial")


async def test_lifespan_hooks_background_tasks_and_order() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: ASGIApplication) -> AsyncIterator[None]:
        events.append("lifespan enter")
        app.state.db = "connected"
        yield
        events.append("lifespan exit")

    app = ASGIApplication(Router(), lifespan=lifespan)

    async def ticker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            events.append("ticker started")
            await trio.sleep_forever()
        finally:
            events.append("ticker cancelled")

    @app.on_startup
    async def start() -> None:
        events.append(f"startup ({app.state.db})")
        app.start_background_task(ticker)

    @app.on_shutdown
    async def stop() -> None:
        events.append("shutdown hook")

    @app.route("/spawn")
    async def spawn(request: Request) -> Response:
        done = trio.Event()

        async def job() -> None:
            events.append("job ran")
            done.set()

        app.start_background_task(job)
        await done.wait()
        return Response.text("spawned")

    async with TestClient(app) as client:
        assert (await client.get("/spawn")).text == "spawned"
        assert app.nursery is not None
    assert events == [
        "lifespan enter",
        "startup (connected)",
        "ticker started",
        "job ran",
        "ticker cancelled",
        "shutdown hook",
        "lifespan exit",
    ]
    with pytest.raises(ASGIError, match="not running"):
        app.start_background_task(ticker)


async def test_failing_background_task_is_logged_and_app_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = ASGIApplication()

    async def broken() -> None:
        raise ValueError("background boom")

    @app.route("/go")
    async def go(request: Request) -> Response:
        app.start_background_task(broken, name="broken-task")
        await trio.testing.wait_all_tasks_blocked()
        return Response.text("still fine")

    with caplog.at_level(logging.ERROR, logger="trionet.asgi"):
        async with TestClient(app) as client:
            assert (await client.get("/go")).text == "still fine"
            assert (await client.get("/go")).text == "still fine"
    assert sum("broken-task failed" in r.getMessage() for r in caplog.records) == 2


async def test_startup_failure_is_reported() -> None:
    app = ASGIApplication()

    @app.on_startup
    async def fail() -> None:
        raise ConnectionError("database unreachable")

    with pytest.raises(ASGIError, match="startup failed: ConnectionError: database unreachable"):
        async with TestClient(app):
            pass  # pragma: no cover


async def test_shutdown_failure_is_reported() -> None:
    app = ASGIApplication()

    @app.on_shutdown
    async def fail() -> None:
        raise RuntimeError("flush failed")

    with pytest.raises(ASGIError, match="shutdown failed: RuntimeError: flush failed"):
        async with TestClient(app):
            pass


async def test_lifespan_is_optional_in_the_test_client() -> None:
    async def no_lifespan_app(scope: dict[str, object], receive: object, send: object) -> None:
        raise ValueError("only http here")

    with pytest.raises(ASGIError, match="lifespan ended without answering"):
        async with TestClient(no_lifespan_app):  # type: ignore[arg-type]
            pass  # pragma: no cover
    async with TestClient(App(), lifespan=False) as client:
        assert (await client.get("/")).status_code == 200


async def test_app_without_router_answers_404_and_rejects_websockets() -> None:
    client = TestClient(ASGIApplication())
    assert (await client.get("/")).status_code == 404
    from trionet.asgi import WebSocketRejected

    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket_connect("/ws"):
            pass  # pragma: no cover
    assert info.value.status_code == 404


async def test_unsupported_scope_type() -> None:
    async def receive() -> Message:
        raise AssertionError

    async def send(message: Message) -> None:
        raise AssertionError

    with pytest.raises(ASGIError, match="unsupported ASGI scope type 'mqtt'"):
        await ASGIApplication()({"type": "mqtt"}, receive, send)


async def test_http_exception_from_a_child_task_keeps_its_status() -> None:
    router = Router()

    @router.route("/fanout")
    async def fanout(request: Request) -> Response:
        async def check() -> None:
            raise HTTPException(409, "conflict in a child task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check)
        return Response.text("unreachable")  # pragma: no cover

    response = await TestClient(ASGIApplication(router)).get("/fanout")
    assert (response.status_code, response.json()) == (409, {"error": "conflict in a child task"})


async def test_url_for_reaches_into_a_mounted_application() -> None:
    inner = ASGIApplication()

    @inner.route("/things/{thing_id:int}")
    async def thing(request: Request, thing_id: int) -> Response:
        return Response.text(str(request.url_for("admin:thing", thing_id=thing_id + 1)))

    outer = ASGIApplication()
    outer.mount("/admin", inner, name="admin")
    response = await TestClient(outer).get("/admin/things/1")
    assert response.text == "http://testserver/admin/things/2"


async def test_application_statistics() -> None:
    from trionet.asgi import Response, TestClient

    app = ASGIApplication()

    @app.route("/ok")
    async def ok(request: Request) -> Response:
        stats = app.statistics()
        return Response.json({"in_flight": stats.in_flight})

    async with TestClient(app) as client:
        assert (await client.get("/ok")).json() == {"in_flight": 1}
        assert (await client.get("/missing")).status_code == 404
    stats = app.statistics()
    assert (stats.requests, stats.in_flight, stats.errors) == (2, 0, 0)
