"""``trionet demo``: every component in one nursery, on embedded defaults (no broker needed).

By default the demo starts a :class:`~trionet.demo._stack.Stack` (ASGI on Hypercorn's trio worker,
an AsyncAProto server, an RPC server and a DistributedApplication on ``memory://``), exercises each
service with a client, prints what happened, and shuts down gracefully. ``--serve`` keeps the
stack running until SIGINT/SIGTERM; ``--broker`` moves the bus to MQTT or Kafka. ``--only PART``
runs one component's own small demo instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from ..codecs import MsgPack
from ..errors import ConfigurationError
from ..framing import FramedStream

Report = Callable[[str], None]
DemoPart = Callable[[Report], Awaitable[None]]


async def _framed_echo(report: Report) -> None:
    """A framed echo server and a client in one nursery, msgpack-encoded."""
    codec = MsgPack()

    async def echo(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        async with framed:
            async for frame in framed:
                await framed.send_frame(frame)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        report(f"framed echo server listening on {host}:{port}")
        stream = await trio.open_tcp_stream(host, port)
        async with FramedStream(stream) as client:
            for message in (["ping", 42], {"hello": "trio"}, b"\x00binary\xff"):
                await client.send_frame(codec.encode(message))
                reply = codec.decode(await client.receive_frame())
                report(f"framed echo: sent {message!r}, got back {reply!r}")
        nursery.cancel_scope.cancel()
    report("framed echo server stopped")


#: ``--smtp``, ``--imap`` and ``--ca-file`` of the mail part (None where not given).
MailOptions = tuple[str | None, str | None, str | None]


def _parts(broker: str, mail: MailOptions = (None, None, None)) -> dict[str, DemoPart]:
    from ._aproto import demo as aproto_demo
    from ._asgi import demo as asgi_demo
    from ._bus import demo as bus_demo
    from ._channel import demo as channel_demo

    parts: dict[str, DemoPart] = {
        "framing": _framed_echo,
        "asgi": asgi_demo,
        "channel": channel_demo,
        "aproto": aproto_demo,
        "bus": partial(bus_demo, broker_url=broker),
    }
    if broker.startswith("mqtt"):
        from ._mqtt import demo as mqtt_demo

        parts["mqtt"] = partial(mqtt_demo, url=broker)
    if broker.startswith("kafka"):
        from ._kafka import demo as kafka_demo

        parts["kafka"] = partial(kafka_demo, url=broker)
    smtp, imap, ca_file = mail
    if smtp is not None and imap is not None:
        from ._mail import demo as mail_demo

        parts["mail"] = partial(mail_demo, smtp_url=smtp, imap_url=imap, ca_file=ca_file)
    return parts


#: The parts that need a broker given with --broker, and the URL scheme each needs.
_BROKER_PARTS = {"mqtt": "mqtt", "kafka": "kafka"}
_DEFAULT_PORTS = {"mqtt": 1883, "kafka": 9092}


def _report(line: str) -> None:
    print(line, flush=True)


async def _run_stack(broker: str, report: Report) -> None:
    from ._stack import Stack, exercise

    stack = Stack(broker=broker)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(stack.serve)
        report("== one nursery: ASGI + AsyncAProto + RPC + DistributedApplication")
        for line in addresses.lines():
            report(line)
        with trio.fail_after(60):
            await exercise(addresses, report)
        stats = stack.statistics()
        report(f"statistics: {stats['orders_handled']} orders handled by the bus, "
               f"gateway published {stats['gateway']['published']} request(s)")
        report("shutting down: http, aproto, bus (draining), rpc, gateway ...")
        stack.begin_shutdown()
    report("states after shutdown: "
           + ", ".join(f"{name}={state}" for name, state in stack.states.items()))


async def run_demo(
    only: Sequence[str] | None = None, broker: str = "memory://", serve: bool = False,
    mail: MailOptions = (None, None, None),
) -> int:
    """Run the demo; see the module docstring. Returns the process exit status."""
    if serve:
        from ._stack import Stack, serve_until_signal

        # 0 after a graceful stop, 130/143 when a second SIGINT/SIGTERM forced it.
        return await serve_until_signal(Stack(broker=broker), _report)
    if not only:
        await _run_stack(broker, _report)
        _report("demo finished: every component shut down cleanly")
        return 0
    parts = _parts(broker, mail)
    if "mail" in only and "mail" not in parts:
        raise ConfigurationError(
            "demo part 'mail' needs --smtp smtp[s]://USER:PASSWORD@HOST:PORT and "
            "--imap imap[s]://USER:PASSWORD@HOST:PORT (and --ca-file FILE for a private CA)"
        )
    for name, scheme in _BROKER_PARTS.items():
        if name in only and name not in parts:
            raise ConfigurationError(
                f"demo part {name!r} needs --broker {scheme}://HOST:PORT "
                f"(e.g. --broker {scheme}://127.0.0.1:{_DEFAULT_PORTS[name]})"
            )
    unknown = sorted(set(only) - set(parts))
    if unknown:
        raise ConfigurationError(
            f"unknown demo part(s): {', '.join(unknown)}; known: "
            f"{', '.join([*parts, *(p for p in [*_BROKER_PARTS, 'mail'] if p not in parts)])}"
        )
    with trio.fail_after(120):
        for name in parts:
            if name in only:
                _report(f"== {name}")
                await parts[name](_report)
    _report("demo finished: every component shut down cleanly")
    return 0
