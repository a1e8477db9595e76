"""The examples of docs/howto/testing.rst: one service, tested in-process and on real servers.

The page includes parts of this file; keep the ``# [name]`` markers where they are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from trionet import rpc
from trionet.asgi import ASGIApplication, HTTPException, Request, Response, Router, TestClient
from trionet.bus import BusMessage, BusSocket, DistributedApplication, SocketProvider, from_url
from trionet.bus.testing import MemoryBroker, serving
from trionet.channel import open_channel
from trionet.mail import AsyncIMAPClient, AsyncSMTPClient, MailMessage
from trionet.testing import KafkaBroker, MailServers, MosquittoServer

# [code-under-test]
GREETINGS = {"en": "hello", "fr": "bonjour"}


def build_bus(provider: SocketProvider, *, work: float = 0) -> DistributedApplication:
    """The back end: answers requests on ``greet/<language>`` (after *work* seconds)."""
    bus = DistributedApplication(provider)

    @bus.application("greet/+")
    async def greeter(message: BusMessage, socket: BusSocket) -> None:
        await trio.sleep(work)
        lang = message.topic.rpartition("/")[2]
        answer = {"greeting": f"{GREETINGS[lang]} {message.text}"} if lang in GREETINGS else {}
        await socket.reply(message, json.dumps(answer))

    return bus


def build_web(provider: SocketProvider) -> ASGIApplication:
    """The front end: ``GET /greet/{lang}/{name}`` asks the back end over the bus."""
    router = Router()

    @router.route("/greet/{lang}/{name}")
    async def greet(request: Request, lang: str, name: str) -> Response:
        socket: BusSocket = request.app.state.bus
        try:
            with trio.fail_after(2):
                reply = await socket.request(BusMessage(name, f"greet/{lang}"))
        except trio.TooSlowError:
            raise HTTPException(504, "the greeter did not answer in time") from None
        answer: dict[str, Any] = reply.json()
        if not answer:
            raise HTTPException(404, f"no greeting for {lang!r}")
        return Response.json(answer)

    @asynccontextmanager
    async def lifespan(app: ASGIApplication) -> AsyncIterator[None]:
        async with provider.create_socket(name="web") as socket:
            app.state.bus = socket
            yield

    return ASGIApplication(router, lifespan=lifespan)
# [/code-under-test]


# [in-process]
async def test_greeting_in_process() -> None:
    broker = MemoryBroker()  # private to this test: nothing else publishes on it
    async with (
        serving(build_bus(broker.provider())),  # returns once the greeter is subscribed
        TestClient(build_web(broker.provider())) as client,  # runs the app's lifespan
    ):
        response = await client.get("/greet/fr/trio")
        assert response.status_code == 200
        assert response.json() == {"greeting": "bonjour trio"}
        assert (await client.get("/greet/xx/trio")).status_code == 404
    assert broker.statistics.acked == 2  # both requests were handled and acknowledged
# [/in-process]


# [autojump]
async def test_a_slow_back_end_gives_504(autojump_clock: trio.testing.MockClock) -> None:
    broker = MemoryBroker()
    web = build_web(broker.provider())
    back_end = build_bus(broker.provider(), work=3)
    async with serving(back_end), TestClient(web) as client:
        response = await client.get("/greet/en/trio")  # 2 s deadline, 3 s of work
        assert response.status_code == 504
        await trio.sleep(2)  # long enough for the 3 s of work, had it gone on
        # The request carried the caller's 2 s deadline, so the greeter was cancelled when
        # the caller gave up: no work wasted, no late reply.
        assert back_end.statistics["greeter"].expired == 1
        assert web.state.bus.statistics.late_replies == 0
    # With the autojump clock those 5 s of trio time took no real time at all.
# [/autojump]


# [rpc-memory]
class Calculator:
    router = rpc.Service()

    @rpc.expose
    async def add(self, a: int, b: int) -> int:
        return a + b


async def test_rpc_over_a_memory_stream_pair() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()  # no sockets
    async with (
        open_channel(client_end) as client_channel,
        open_channel(server_end) as server_channel,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(rpc.serve_rpc, server_channel, Calculator())
        assert await rpc.RpcClient(client_channel).remote.add(1, 2) == 3
        nursery.cancel_scope.cancel()
# [/rpc-memory]


# [mosquitto]
async def test_greeting_over_mqtt(mosquitto: MosquittoServer) -> None:
    url = f"mqtt://{mosquitto.info.host}:{mosquitto.info.port}"  # a private mosquitto
    async with (
        serving(build_bus(from_url(url))),
        TestClient(build_web(from_url(url))) as client,
    ):
        response = await client.get("/greet/en/mqtt")
        assert response.json() == {"greeting": "hello mqtt"}
# [/mosquitto]


# [kafka]
async def test_request_over_kafka(kafka_broker: KafkaBroker) -> None:
    run = uuid.uuid4().hex[:8]  # the broker is shared by the session: unique names
    topic = f"docs-{run}/greet"
    url = (
        f"kafka://{kafka_broker.info.bootstrap_servers}?group=docs-{run}"
        "&consumer.session_timeout_ms=6000&consumer.heartbeat_interval_ms=1000"
    )
    bus = DistributedApplication(url)

    @bus.application(topic)
    async def greeter(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, f"hello {message.text}")

    async with serving(bus), from_url(url).create_socket(name="test") as socket:
        with trio.fail_after(30):
            reply = await socket.request(BusMessage("kafka", topic))
    assert reply.text == "hello kafka"
# [/kafka]


# [mail]
async def test_mail_round_trip(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice, bob = info.user("alice"), info.user("bob")
    subject = f"docs {uuid.uuid4().hex}"  # the servers are shared by the session
    with trio.fail_after(30):
        async with AsyncSMTPClient() as smtp:
            await smtp.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
            await smtp.login(alice.address, alice.password)
            await smtp.send_message(
                MailMessage(subject, alice.address, [bob.address], text_content="hi Bob")
            )
        async with AsyncIMAPClient() as imap:
            await imap.connect(
                info.host, info.imaps_port, use_tls=True, ssl_context=info.ssl_context()
            )
            await imap.login(bob.address, bob.password)
            await imap.select_mailbox("INBOX")
            while True:  # Postfix hands the message to Dovecot over LMTP: not at once
                found = await imap.fetch_messages(f'HEADER Subject "{subject}"')
                if found:
                    break
                await trio.sleep(0.1)
            message = found[0]
            assert message.text_content is not None and message.uid is not None
            assert message.text_content.strip() == "hi Bob"
            await imap.delete_messages([message.uid])  # leave the mailbox as it was
# [/mail]
