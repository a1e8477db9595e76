"""Tutorial, step 4: an RPC service and an AsyncAProto server in front of the same bus."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from trionet import rpc
from trionet.aproto import AsyncClient, Filters, HandlerClient, Packet, Server
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


# -- the front end: RPC (aiomas-compatible) -----------------------------------------------------


class Greeter:
    router = rpc.Service()

    def __init__(self, socket: BusSocket) -> None:
        self.socket = socket

    @rpc.expose
    async def greet(self, lang: str, name: str) -> str:
        with trio.fail_after(2):
            return await ask_greeter(self.socket, lang, name)  # LookupError reaches the caller


# -- the front end: AsyncAProto packets --------------------------------------------------------


def make_aproto_server(socket: BusSocket) -> Server:
    server = Server("127.0.0.1", 0)

    @server.add_handler(Filters.Fields(cmd="greet$", lang=None, name=None))
    async def greet(client: HandlerClient, packet: Packet) -> None:
        try:
            with trio.fail_after(2):
                greeting = await ask_greeter(socket, str(packet["lang"]), str(packet["name"]))
        except LookupError as exc:
            reply = {"status": "failure", "error": str(exc)}
        except trio.TooSlowError:
            reply = {"status": "failure", "error": "ERR_TIMED_OUT"}
        else:
            reply = {"status": "ok", "greeting": greeting}
        await client.send(reply)

    return server


async def main() -> None:
    async with trio.open_nursery() as backend:
        await backend.start(bus.serve)
        # One more bus socket, shared by the RPC and AProto front ends (requests on one socket
        # run concurrently). Front ends live in an inner nursery, inside the socket's block.
        async with (
            provider.create_socket(name="frontends") as socket,
            trio.open_nursery() as frontends,
        ):
            http = await frontends.start(serve, app, "127.0.0.1:0")
            (rpc_address,) = await frontends.start(
                rpc.start_server, ("127.0.0.1", 0), Greeter(socket)
            )
            aproto_port = await frontends.start(make_aproto_server(socket).serve)
            print("HTTP on", http.url, "RPC on", rpc_address, "AProto on port", aproto_port)

            async with httpx.AsyncClient(base_url=http.url) as client:
                print("HTTP:", (await client.get("/greet/de/trio")).json())
            async with rpc.open_connection(rpc_address) as rpc_client:
                print("RPC:", await rpc_client.remote.greet("fr", "trio"))
            async with AsyncClient(tls=False) as aproto_client:
                await aproto_client.connect("127.0.0.1", aproto_port)
                packet = {"cmd": "greet", "lang": "ja", "name": "trio"}
                print("AProto:", await aproto_client.request(packet))

            frontends.cancel_scope.cancel()
        backend.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
