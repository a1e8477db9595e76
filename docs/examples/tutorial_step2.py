"""Tutorial, step 2: a message bus next to the HTTP server, with a consumer answering requests."""

import json

import httpx
import trio

from trionet.asgi import ASGIApplication, Request, Response, Router, serve
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


# -- the front end: HTTP (not connected to the bus yet) ------------------------------------------

router = Router()


@router.route("/greet/{lang}/{name}")
async def greet(request: Request, lang: str, name: str) -> Response:
    return Response.json({"greeting": f"hello {name}", "lang": lang})


app = ASGIApplication(router)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)  # returns once every consumer is subscribed
        address = await nursery.start(serve, app, "127.0.0.1:0")
        print("HTTP on", address.url)

        # A socket of our own on the same broker, to talk to the greeter directly.
        async with provider.create_socket(name="main") as socket:
            with trio.fail_after(5):
                reply = await socket.request(BusMessage("trio", "greet/fr"))
            print("bus reply:", reply.json())
            assert reply.json() == {"greeting": "bonjour trio"}

        async with httpx.AsyncClient(base_url=address.url) as client:
            response = await client.get("/greet/en/trio")
            print(response.status_code, response.json())

        nursery.cancel_scope.cancel()  # the server and the bus both shut down gracefully


if __name__ == "__main__":
    trio.run(main)
