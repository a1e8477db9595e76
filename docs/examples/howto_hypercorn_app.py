"""An application for ``hypercorn -k trio howto_hypercorn_app:app``: HTTP and a bus, one process.

The bus runs inside the ASGI application's own nursery, so Hypercorn's lifespan starts and stops
it. Run this file directly and it checks itself in-process with the test client instead.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trionet.asgi import ASGIApplication, HTTPException, Request, Response, Router, TestClient
from trionet.bus import BusMessage, BusSocket, DistributedApplication, from_url

# The broker comes from the environment: memory:// (in this process) unless told otherwise.
provider = from_url(os.environ.get("GREETER_BROKER", "memory://greeter"))
bus = DistributedApplication(provider)


@bus.application("greet/+", max_concurrency=16)
async def greeter(message: BusMessage, socket: BusSocket) -> None:
    lang = message.topic.rpartition("/")[2]
    word = {"en": "hello", "fr": "bonjour"}.get(lang)
    await socket.reply(message, json.dumps({"greeting": f"{word} {message.text}"} if word else {}))


router = Router()


@router.route("/greet/{lang}/{name}")
async def greet(request: Request, lang: str, name: str) -> Response:
    try:
        with trio.fail_after(2):
            reply = await request.app.state.bus.request(BusMessage(name, f"greet/{lang}"))
    except trio.TooSlowError:
        raise HTTPException(504, "the greeter did not answer in time") from None
    if not reply.json():
        raise HTTPException(404, f"no greeting for language {lang!r}")
    return Response.json(reply.json())


@asynccontextmanager
async def lifespan(app: ASGIApplication) -> AsyncIterator[None]:
    async with provider.create_socket(name="web") as socket:  # closed after the last request
        app.state.bus = socket
        yield


app = ASGIApplication(router, lifespan=lifespan)


@app.on_startup
async def start_bus() -> None:
    # The application nursery lives from startup to shutdown; at shutdown its tasks are
    # cancelled, which the bus turns into a graceful stop (running handlers finish).
    await app.nursery.start(bus.serve)


async def self_check() -> None:
    async with TestClient(app) as client:  # runs the lifespan: the bus starts and stops
        response = await client.get("/greet/fr/trio")
        print(response.status_code, response.json())
        assert response.json() == {"greeting": "bonjour trio"}


if __name__ == "__main__":
    trio.run(self_check)
