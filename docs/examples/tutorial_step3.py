"""Tutorial, step 3: an HTTP endpoint that asks the bus and returns the reply."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from trionet.asgi import ASGIApplication, HTTPException, Request, Response, Router, serve
from trionet.bus import BusMessage, BusSocket, DistributedApplication, from_url

# -- the back end: a bus application answering requests on greet/<language> ----------------------

provider = from_url("memory://tutorial")  # an in-process broker, named "tutorial"
bus = DistributedApplication(provider)

GREETINGS = {"en": "hello", "fr": "bonjour", "de": "hallo", "ja": "konnichiwa"}


@bus.application("greet/+", max_concurrency=16)
async def greeter(message: BusMessage, socket: BusSocket) -> None:
    lang = message.topic.rpartition("/")[2]  # the level the + matched
    if lang in GREETINGS:
        answer = {"greeting": f"{GREETINGS[lang]} {message.text}"}
    else:
        answer = {"error": f"no greeting for language {lang!r}"}
    await socket.reply(message, json.dumps(answer), content_type="application/json")


async def ask_greeter(socket: BusSocket, lang: str, name: str) -> str:
    """Ask the greeter over the bus; raise LookupError for a language it does not know."""
    if not lang.isalpha():  # a topic level may not contain "/", "+" or "#"
        raise LookupError(f"no greeting for language {lang!r}")
    reply = await socket.request(BusMessage(name, f"greet/{lang}"))
    answer = reply.json()
    if "error" in answer:
        raise LookupError(answer["error"])
    return str(answer["greeting"])


# -- the front end: HTTP, with a bus socket of its own -------------------------------------------

router = Router()


@router.route("/greet/{lang}/{name}")
async def greet(request: Request, lang: str, name: str) -> Response:
    try:
        with trio.fail_after(2):  # the deadline is the caller's, as always in trio
            greeting = await ask_greeter(request.app.state.bus, lang, name)
    except trio.TooSlowError:
        raise HTTPException(504, "the greeter did not answer in time") from None
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return Response.json({"greeting": greeting})


@asynccontextmanager
async def lifespan(app: ASGIApplication) -> AsyncIterator[None]:
    # Opened before the server takes its first request, closed after the last one finished.
    async with provider.create_socket(name="web") as socket:
        app.state.bus = socket
        yield


app = ASGIApplication(router, lifespan=lifespan)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        address = await nursery.start(serve, app, "127.0.0.1:0")
        print("HTTP on", address.url)

        async with httpx.AsyncClient(base_url=address.url) as client:
            for path in ("/greet/en/trio", "/greet/ja/trio", "/greet/xx/trio"):
                response = await client.get(path)
                print(path, response.status_code, response.json())
            assert response.status_code == 404

        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
