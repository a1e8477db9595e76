"""The bridges' test harness: a browser at the ASGI level that reads only when told to, a source
tap that says when a message went through, and an event-stream parser."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from trionet.asgi import HTTPConnection, Request
from trionet.asgi._types import Message, Scope


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def http_scope(path: str = "/events", method: str = "GET") -> Scope:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def parse_events(data: bytes) -> list[dict[str, str]]:
    """The complete events in a ``text/event-stream`` body (comments skipped)."""
    events = []
    for block in data.decode("utf-8").split("\n\n")[:-1]:
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = event[name] + "\n" + value if name in event else value
        if event:
            events.append(event)
    return events


class SlowBrowser:
    """An ASGI ``send``/``receive`` pair for one event stream: the response starts at once,
    but each body chunk is accepted only when the test grants it (``allow(n)``), as a browser
    that does not read would make a server's ``send`` wait. ``leave()`` disconnects."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.started = trio.Event()
        self.body = b""
        self.chunks = 0
        self._credits = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._chunk_arrived = trio.lowlevel.ParkingLot()
        self._gone = trio.Event()

    def allow(self, chunks: float) -> None:
        self._credits += chunks  # type: ignore[assignment]
        self._lot.unpark_all()

    def leave(self) -> None:
        self._gone.set()

    async def receive(self) -> Message:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started.set()
            return
        body = message.get("body", b"")
        if not body:
            return
        while self._credits < 1:
            await self._lot.park()
        self._credits -= 1
        self.body += body
        self.chunks += 1
        self._chunk_arrived.unpark_all()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(event["data"]) for event in parse_events(self.body) if "data" in event]

    async def wait_for_payload(self, payload: str) -> list[dict[str, Any]]:
        """Take chunks until an event with *payload* arrived; returns every event so far."""
        self.allow(float("inf"))
        while True:
            events = self.events()
            if any(event.get("payload") == payload for event in events):
                return events
            await self._chunk_arrived.park()


async def stream_events(endpoint: Callable[[Request], Any], browser: SlowBrowser) -> None:
    """Run an event-stream endpoint against *browser* until the stream ends."""
    scope = http_scope()
    response = await endpoint(Request(scope, browser.receive))
    await response.send_to(scope, browser.receive, browser.send)


class _Tap:
    def __init__(self, messages: AsyncIterable[Any], marker: bytes, seen: trio.Event) -> None:
        self._messages = aiter(messages)
        self._marker = marker
        self._seen = seen

    def __aiter__(self) -> _Tap:
        return self

    async def __anext__(self) -> Any:
        message = await anext(self._messages)
        if getattr(message, "payload", None) == self._marker:
            self._seen.set()
        return message


def tapped(
    source: Callable[[HTTPConnection], AbstractAsyncContextManager[AsyncIterable[Any]]],
    marker: bytes, seen: trio.Event,
) -> Callable[[HTTPConnection], AbstractAsyncContextManager[AsyncIterable[Any]]]:
    """*source*, with *seen* set when the message whose payload is *marker* is read from it."""

    @asynccontextmanager
    async def subscribe(connection: HTTPConnection) -> AsyncIterator[AsyncIterable[Any]]:
        async with source(connection) as messages:
            yield _Tap(messages, marker, seen)

    return subscribe
