"""A browser's own ``EventSource`` (headless Chromium, ``tests/browser_support.py``) resumes an
:class:`EventSourceResponse` stream: the server ends the stream after three events, the browser
waits the ``retry`` the server asked for, reconnects with ``Last-Event-ID``, and the producer
factory continues after that id, so the page sees every event once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import trio
from asgi_support import running_server
from browser_support import browser_tab

from trionet.asgi import ASGIApplication, EventSourceResponse, Request, Response

PAGE = """<!doctype html><script>
window.seen = [];
window.source = new EventSource("/feed");
window.source.onmessage = (e) => window.seen.push(`${e.data}@${e.lastEventId}`);
window.atLeast = (n) => new Promise((resolve) => {
  const check = () => window.seen.length >= n
    ? (window.source.close(), resolve(window.seen.slice(0, n)))
    : setTimeout(check, 10);
  check();
});
</script>"""


async def test_chromium_reconnects_and_resumes_after_its_last_event(tmp_path: Path) -> None:
    app = ASGIApplication()
    resumed_from: list[str | None] = []

    @app.route("/")
    async def index(request: Request) -> Response:
        return Response.html(PAGE)

    @app.route("/feed")
    async def feed(request: Request) -> Response:
        def produce(last_id: str | None) -> AsyncIterator[dict[str, object]]:
            resumed_from.append(last_id)
            return three_after(int(last_id) if last_id is not None else -1)

        async def three_after(last: int) -> AsyncIterator[dict[str, object]]:
            for n in range(last + 1, last + 4):
                yield {"data": f"event {n}", "id": n}
            # The stream ends here: the browser reconnects after `retry` milliseconds.

        return EventSourceResponse(produce, retry=100)

    with trio.fail_after(60):
        async with running_server(app) as address, browser_tab(tmp_path) as tab:
            await tab.command("Page.navigate", url=f"{address.url}/")
            await tab.until_event("Page.loadEventFired")
            seen = await tab.evaluate("window.atLeast(6)")
    assert seen == [f"event {n}@{n}" for n in range(6)]
    assert resumed_from[:2] == [None, "2"]
