"""Background tasks attached to a response: after the body, in the request's context, errors
logged."""

from __future__ import annotations

import contextvars
import logging

import pytest
import trio
from asgi_support import running_server

from trionet.asgi import (
    ASGIApplication,
    ASGIMiddleware,
    BackgroundTask,
    BackgroundTasks,
    Message,
    Receive,
    Request,
    Response,
    Router,
    Scope,
    Send,
    TestClient,
)

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="nobody")


async def test_task_runs_after_the_body_in_the_request_context() -> None:
    events: list[str] = []

    class Recorder(ASGIMiddleware):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def recording_send(message: Message) -> None:
                events.append(message["type"])
                await send(message)

            token = user.set("ada")
            try:
                await self.app(scope, receive, recording_send)
            finally:
                user.reset(token)
            events.append("middleware done")

    async def audit(action: str, *, who: str = "") -> None:
        await trio.lowlevel.checkpoint()
        events.append(f"{action} by {user.get()}{who}")

    def blocking_audit(action: str) -> None:  # a plain function: run on a worker thread
        events.append(f"blocking {action}")

    router = Router()

    @router.route("/single")
    async def single(request: Request) -> Response:
        return Response.json({"ok": True}, background=BackgroundTask(audit, "single"))

    @router.route("/several")
    async def several(request: Request) -> Response:
        tasks = BackgroundTasks()
        tasks.add_task(audit, "first", who="!")
        tasks.add_task(blocking_audit, "second")
        return Response.text("ok", background=tasks)

    @router.route("/stream")
    async def stream(request: Request) -> Response:
        return Response.stream([b"a", b"b"], background=BackgroundTask(audit, "streamed"))

    app = ASGIApplication(router)
    app.add_middleware(Recorder)
    async with TestClient(app) as client:
        assert (await client.get("/single")).json() == {"ok": True}
        assert events == [
            "http.response.start", "http.response.body", "single by ada", "middleware done"
        ]
        del events[:]
        assert (await client.get("/several")).text == "ok"
        assert events[2:] == ["first by ada!", "blocking second", "middleware done"]
        del events[:]
        assert (await client.get("/stream")).text == "ab"
        assert events[-2:] == ["streamed by ada", "middleware done"]


async def test_failing_task_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def fails() -> None:
        raise RuntimeError("disk full")

    async def succeeds() -> None:
        ran.append("second")

    router = Router()

    @router.route("/")
    async def index(request: Request) -> Response:
        return Response.text("done", background=BackgroundTasks(
            [BackgroundTask(fails), BackgroundTask(succeeds)]
        ))

    @router.route("/one")
    async def one(request: Request) -> Response:
        return Response.text("done", background=BackgroundTask(fails))

    with caplog.at_level(logging.ERROR, logger="trionet.asgi"):
        async with TestClient(ASGIApplication(router)) as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/one")).text == "done"
    assert ran == ["second"]
    failures = [r for r in caplog.records if "background task" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info and "disk full" in str(r.exc_info[1]) for r in failures)


async def test_the_client_has_the_response_before_the_task_finishes() -> None:
    release = trio.Event()
    finished = trio.Event()

    async def slow_follow_up() -> None:
        await release.wait()
        finished.set()

    router = Router()

    @router.route("/")
    async def index(request: Request) -> Response:
        return Response.text("answered", background=BackgroundTask(slow_follow_up))

    with trio.fail_after(20):  # a hang guard: the task waits for the client's answer
        async with running_server(router) as address:
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"answered"):
                    data += await stream.receive_some(4096)
                assert data.startswith(b"HTTP/1.1 200")
                assert not finished.is_set()
                release.set()
                await finished.wait()
