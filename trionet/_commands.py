"""The operators' commands of the ``trionet`` command line, and the logging options every
command shares.

``trionet mqtt pub|sub`` (in the spirit of mosquitto_pub/mosquitto_sub), ``trionet kafka
produce|consume`` (kcat), ``trionet bus publish|request``, ``trionet rpc call`` and
``trionet aproto send``: each connects, does one thing, prints the result on stdout and
exits; a failure is one line on stderr (see :func:`trionet.cli.report_failure`).

:func:`add_logging_arguments` gives a command ``--log-level`` and ``--log-format text|json``;
:func:`setup_logging` applies them with :func:`trionet.observability.configure_logging`, the
one logging setup of ``trionet serve``, ``run``, ``demo`` and the commands below.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from .errors import ConfigurationError, RemoteException, TrionetError
from .observability import LOG_FORMATS, LOG_LEVELS, configure_logging

__all__ = ["COMMANDS", "add_commands", "add_logging_arguments", "run_command", "setup_logging"]

logger = logging.getLogger("trionet.command")


def add_logging_arguments(parser: argparse.ArgumentParser, *, level: str = "info") -> None:
    """Add ``--log-level`` and ``--log-format`` to *parser* (a command's parser)."""
    parser.add_argument("--log-level", default=level, choices=LOG_LEVELS, type=str.lower,
                        help=f"the logging level (default: {level})")
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS, type=str.lower,
                        help="text: human-readable lines (default); json: one JSON object "
                             "per line (time, level, logger, message, correlation_id)")


def setup_logging(args: argparse.Namespace, *, text_format: str = "text") -> None:
    """Configure the root logger from a command's parsed ``--log-level``/``--log-format``
    (replacing any handler it has); *text_format* is the format string used for ``text``."""
    fmt = "json" if getattr(args, "log_format", "text") == "json" else text_format
    configure_logging(getattr(args, "log_level", "info"), fmt, replace=True)


# --------------------------------------------------------------------------- shared helpers

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_TIMEOUT = 10.0


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_logging_arguments(parser, level="warning")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of a failure (also: TRIONET_DEBUG=1)")
    return parser


def _positive_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _timeout(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def parse_address(text: str) -> tuple[str, int] | str:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a Unix socket path (with a ``/``)."""
    if "/" in text and not text.startswith("["):
        return text
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"expected an address HOST:PORT, [IPv6]:PORT or a Unix socket path, got {text!r}"
        )
    return host, int(port)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{what} is not valid JSON ({exc}): {text!r}") from None


@contextmanager
def _answer_within(seconds: float, what: str) -> Iterator[None]:
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise TrionetError(
            f"{what} did not answer within {seconds:g} s (--timeout SECONDS to wait longer)"
        ) from None


def _print(text: str) -> None:
    print(text, flush=True)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def _run(prog: str, args: argparse.Namespace, fn: Callable[..., Awaitable[int]]) -> int:
    """Run ``fn(args)`` under trio with the shared logging and failure reporting; Ctrl+C ends
    a waiting command quietly with status 130."""
    from .cli import run_reporting

    setup_logging(args)
    if args.command == "kafka" and args.log_level != "debug":
        # kafka-python logs every failed connection attempt; the failure is reported in one
        # line anyway (--log-level debug shows them).
        logging.getLogger("kafka").setLevel(logging.CRITICAL)

    def command() -> int:
        try:
            status: int = trio.run(fn, args)
        except KeyboardInterrupt:
            return 130
        return status

    return run_reporting(prog, command, debug=getattr(args, "debug", None))


# --------------------------------------------------------------------------- mqtt

async def _mqtt_pub(args: argparse.Namespace) -> int:
    from .mqtt import open_mqtt_client

    if args.message is not None:
        payloads: list[bytes] = [args.message.encode()]
    else:  # one message per line of stdin, as mosquitto_pub -l
        payloads = [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    async with open_mqtt_client(args.url) as client:
        for payload in payloads:
            await client.publish(args.topic, payload, qos=args.qos, retain=args.retain)
    logger.info("published %d message(s) to %s", len(payloads), args.topic)
    return 0


async def _mqtt_sub(args: argparse.Namespace) -> int:
    from .mqtt import MQTTMessage, open_mqtt_client

    received = 0
    async with open_mqtt_client(args.url) as client, trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel[MQTTMessage](0)

        async def subscribe(topic: str, *, task_status: trio.TaskStatus[None]) -> None:
            async with client.subscription(topic, qos=args.qos) as messages:
                task_status.started()
                async for message in messages:
                    await send.send(message)

        for topic in args.topic:
            await nursery.start(subscribe, topic)
        logger.info("subscribed to %s on %s", ", ".join(args.topic), args.url)
        async for message in receive:
            text = message.payload.decode("utf-8", errors="replace")
            _print(f"{message.topic} {text}" if args.verbose else text)
            received += 1
            if args.count is not None and received >= args.count:
                nursery.cancel_scope.cancel()
                break
    return 0


def _add_mqtt(sub: Any) -> None:
    mqtt = sub.add_parser("mqtt", help="publish or subscribe on an MQTT broker "
                          "(like mosquitto_pub / mosquitto_sub)")
    commands = mqtt.add_subparsers(dest="mqtt_command", metavar="pub|sub", required=True)

    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default=DEFAULT_MQTT_URL,
                            help="the broker: mqtt://[USER:PASS@]HOST:PORT, mqtts://... "
                            "(default %(default)s)")
        parser.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0,
                            help="quality of service (default 0)")

    pub = _common(commands.add_parser(
        "pub", help="publish a message", description="Publish -m MESSAGE to -t TOPIC, or "
        "each line of stdin as one message."))
    pub.add_argument("-t", "--topic", required=True, help="the topic to publish to")
    pub.add_argument("-m", "--message", default=None,
                     help="the message (default: one message per line read from stdin)")
    pub.add_argument("-r", "--retain", action="store_true", help="ask the broker to retain it")
    connection(pub)
    subscriber = _common(commands.add_parser(
        "sub", help="print the messages of topic filters",
        description="Subscribe to -t FILTER (repeatable) and print each message's payload on "
        "a line (with -v: the topic, a space, the payload) until -C N messages or Ctrl+C."))
    subscriber.add_argument("-t", "--topic", action="append", required=True,
                            help="a topic filter (+ and # wildcards; repeatable)")
    subscriber.add_argument("-C", "--count", type=_positive_count, default=None, metavar="N",
                            help="exit after N messages")
    subscriber.add_argument("-v", "--verbose", action="store_true",
                            help="print the topic before the payload")
    connection(subscriber)


# --------------------------------------------------------------------------- rpc, aproto

async def _rpc_call(args: argparse.Namespace) -> int:
    from .rpc import open_connection

    address = parse_address(args.address)
    call_args = parse_json(args.args, "ARGS")
    kwargs = parse_json(args.kwargs, "--kwargs") if args.kwargs is not None else {}
    if not isinstance(call_args, list):
        call_args = [call_args]
    if not isinstance(kwargs, dict):
        raise ConfigurationError(f"--kwargs must be a JSON object, got {args.kwargs!r}")
    try:
        with _answer_within(args.timeout, f"the RPC server at {args.address}"):
            async with open_connection(address, codec=args.codec) as client:
                result = await client.call(args.method.replace(".", "/"), *call_args, **kwargs)
    except RemoteException as exc:
        # One line: the remote exception's own last line, not the remote traceback (--debug
        # shows it).
        lines = [line for line in exc.remote_traceback.strip().splitlines() if line.strip()]
        last = lines[-1].strip() if lines else exc.remote_type or "an exception"
        raise TrionetError(f"{args.method} raised on {exc.origin}: {last}") from exc
    _print(_dump(result))
    return 0


async def _aproto_send(args: argparse.Namespace) -> int:
    from .aproto import AsyncClient

    address = parse_address(args.address)
    if isinstance(address, str):
        raise ConfigurationError("the AsyncAProto client connects over TCP: give HOST:PORT")
    packet = parse_json(args.packet, "PACKET")
    if not isinstance(packet, dict):
        raise ConfigurationError(f"PACKET must be a JSON object, got {args.packet!r}")
    with _answer_within(args.timeout, f"the AsyncAProto server at {args.address}"):
        async with AsyncClient(tls=args.tls, encoding=args.encoding, timeout=None) as client:
            await client.connect(*address)
            reply = await client.request(packet)
    _print(_dump(reply))
    return 0


async def _aproto_serve(args: argparse.Namespace) -> int:
    """Run an AsyncAProto server until SIGINT/SIGTERM: the one MODULE:SERVER names, or an echo
    server configured by --config (and --host/--port)."""
    import signal

    from .aproto import Packet, Server
    from .cli import import_target

    if args.server is not None:
        if args.config is not None:
            raise ConfigurationError(
                "give MODULE:SERVER or --config, not both: a server of your own reads its "
                "configuration when it is made (Server(config=...))"
            )
        server = import_target(args.server)
        if not isinstance(server, Server):
            raise ConfigurationError(
                f"{args.server!r} is a {type(server).__name__}, not a trionet.aproto.Server"
            )
    else:
        server = Server(args.host, args.port, config=args.config)

        @server.add_handler()
        async def echo(client: Any, packet: Packet) -> None:
            await client.send(Packet(packet.fields, encoding=packet.encoding))

    forced: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run_server(*, task_status: trio.TaskStatus[int]) -> None:
                await server.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: the signal watcher ends too

            port = await nursery.start(run_server)
            _print(f"serving AsyncAProto on {server.addr}:{port}"
                   + (" (echo)" if args.server is None else ""))
            nursery.start_soon(_stop_on_signals, signals, server, nursery, forced)
    return 128 + forced[0] if forced else 0


async def _stop_on_signals(signals: Any, server: Any, nursery: trio.Nursery,
                           forced: list[int]) -> None:
    """First signal: stop gracefully; second: cancel everything (exit 128 + signal)."""
    stopping = False
    async for signum in signals:
        if stopping:
            forced.append(signum)
            nursery.cancel_scope.cancel()
            return
        stopping = True
        server.stop()


def _add_rpc(sub: Any) -> None:
    rpc = sub.add_parser("rpc", help="call a remote procedure (trionet.rpc / aiomas)")
    commands = rpc.add_subparsers(dest="rpc_command", metavar="call", required=True)
    call = _common(commands.add_parser(
        "call", help="call METHOD on the RPC server at ADDRESS and print the JSON result",
        description="Call METHOD (a path: 'calc/add' or 'calc.add') with ARGS (a JSON array, "
        "or one JSON value for one argument) and print the result as JSON."))
    call.add_argument("address", metavar="ADDRESS", help="HOST:PORT or a Unix socket path")
    call.add_argument("method", metavar="METHOD", help="e.g. calc/add")
    call.add_argument("args", metavar="ARGS", nargs="?", default="[]",
                      help="the arguments as a JSON array (default [])")
    call.add_argument("--kwargs", metavar="JSON", default=None,
                      help="keyword arguments as a JSON object")
    call.add_argument("--codec", default="json", choices=("json", "msgpack"),
                      help="the channel's codec (default json)")
    call.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                      help="give up after this long (default %(default)s)")


def _add_aproto(sub: Any) -> None:
    aproto = sub.add_parser("aproto", help="talk to (or run) an AsyncAProto (AsyncAPY) server")
    commands = aproto.add_subparsers(dest="aproto_command", metavar="send|serve", required=True)
    serve = _common(commands.add_parser(
        "serve", help="run an AsyncAProto server until SIGINT/SIGTERM",
        description="Run the Server that MODULE:SERVER names (handlers and all), or, without "
        "it, an echo server (every packet is answered with itself) configured by --config "
        "(an INI [AsyncAPY] section or a .toml file) and --host/--port. The first SIGINT or "
        "SIGTERM stops gracefully (exit 0), a second one at once (130/143)."))
    serve.add_argument("server", metavar="MODULE:SERVER", nargs="?", default=None,
                       help="a trionet.aproto.Server object to run (default: an echo server)")
    serve.add_argument("--config", metavar="FILE", default=None,
                       help="the echo server's configuration file")
    serve.add_argument("--host", default="127.0.0.1", help="address (default %(default)s)")
    serve.add_argument("--port", type=int, default=8081, help="port (default %(default)s)")
    send = _common(commands.add_parser(
        "send", help="send a JSON packet to the server at ADDRESS and print the reply",
        description="Send PACKET (a JSON object) and print the reply's payload as JSON."))
    send.add_argument("address", metavar="HOST:PORT")
    send.add_argument("packet", metavar="PACKET", help='e.g. \'{"cmd": "ping"}\'')
    send.add_argument("--tls", action="store_true",
                      help="connect with TLS (verified against the system's CAs)")
    send.add_argument("--encoding", default="json", choices=("json", "ziproto"),
                      help="the packet encoding (default json)")
    send.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                      help="give up after this long (default %(default)s)")


# --------------------------------------------------------------------------- kafka

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _stdin_lines() -> list[bytes]:
    return [line.rstrip(b"\r\n") for line in sys.stdin.buffer]


async def _kafka_produce(args: argparse.Namespace) -> int:
    from .kafka import KafkaProducer

    values = [args.message.encode()] if args.message is not None else _stdin_lines()
    key = args.key.encode() if args.key is not None else None
    async with KafkaProducer(args.bootstrap) as producer:
        for value in values:
            metadata = await producer.send(args.topic, value, key=key)
            logger.info("produced to %s [%d] at offset %d", args.topic, metadata.partition,
                        metadata.offset)
    return 0


async def _kafka_consume(args: argparse.Namespace) -> int:
    from .kafka import KafkaConsumer

    received = 0
    reset = "earliest" if args.offset == "beginning" else "latest"
    async with KafkaConsumer(*args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset=reset) as consumer:
        logger.info("consuming %s from %s", ", ".join(args.topic), args.bootstrap)
        async for record in consumer:
            value = _text(record.value)
            if args.key_delimiter is not None:
                value = f"{_text(record.key)}{args.key_delimiter}{value}"
            _print(value)
            received += 1
            if args.count is not None and received >= args.count:
                break
    return 0


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _add_kafka(sub: Any) -> None:
    kafka = sub.add_parser("kafka", help="produce or consume Kafka records (like kcat)")
    commands = kafka.add_subparsers(dest="kafka_command", metavar="produce|consume",
                                    required=True)

    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-b", "--bootstrap", default=DEFAULT_BOOTSTRAP, metavar="HOST:PORT",
                            help="the bootstrap server (default %(default)s)")

    produce = _common(commands.add_parser(
        "produce", help="send records", description="Send -m MESSAGE to -t TOPIC, or each "
        "line of stdin as one record."))
    produce.add_argument("-t", "--topic", required=True, help="the topic")
    produce.add_argument("-m", "--message", default=None,
                         help="the record's value (default: one record per line of stdin)")
    produce.add_argument("-k", "--key", default=None, help="the records' key")
    connection(produce)
    consume = _common(commands.add_parser(
        "consume", help="print records",
        description="Print each record's value on a line until -C N records or Ctrl+C."))
    consume.add_argument("-t", "--topic", action="append", required=True,
                         help="a topic (repeatable)")
    consume.add_argument("-g", "--group", default=None,
                         help="a consumer group (its committed offsets are used and "
                         "updated); default: none")
    consume.add_argument("-o", "--offset", choices=("beginning", "end"), default="beginning",
                         help="where to start without a committed offset (default "
                         "%(default)s)")
    consume.add_argument("-C", "--count", type=_positive_count, default=None, metavar="N",
                         help="exit after N records")
    consume.add_argument("-K", "--key-delimiter", default=None, metavar="DELIM",
                         help="print the key, DELIM, then the value")
    connection(consume)


# --------------------------------------------------------------------------- bus

def _bus_provider(url: str) -> Any:
    from .bus import from_url

    if url.partition(":")[0] == "memory":
        raise ConfigurationError(
            "a memory:// broker is private to a process: give --broker mqtt://HOST:PORT or "
            "--broker kafka://HOST:PORT"
        )
    return from_url(url)


async def _bus_publish(args: argparse.Namespace) -> int:
    from .bus import BusMessage

    provider = _bus_provider(args.broker)
    async with provider.create_socket(()) as socket:
        await socket.publish(BusMessage(args.payload, args.topic,
                                        content_type=args.content_type))
    logger.info("published to %s on %s", args.topic, provider.url)
    return 0


async def _bus_request(args: argparse.Namespace) -> int:
    from .bus import BusMessage, RequestTimeout

    provider = _bus_provider(args.broker)
    async with provider.create_socket(()) as socket:
        try:
            reply = await socket.request(
                BusMessage(args.payload, args.topic, content_type=args.content_type),
                timeout=args.timeout,
            )
        except RequestTimeout:
            raise TrionetError(
                f"no reply to the request on {args.topic} within {args.timeout:g} s "
                "(--timeout SECONDS to wait longer; is a responder subscribed?)"
            ) from None
    _print(_text(reply.payload))
    return 0


def _add_bus(sub: Any) -> None:
    bus = sub.add_parser("bus", help="publish or send a request on the message bus")
    commands = bus.add_subparsers(dest="bus_command", metavar="publish|request",
                                  required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("topic", metavar="TOPIC")
        parser.add_argument("payload", metavar="PAYLOAD", help="the message body (text)")
        parser.add_argument("--broker", default=DEFAULT_MQTT_URL, metavar="URL",
                            help="mqtt://HOST:PORT or kafka://HOST:PORT (default %(default)s)")
        parser.add_argument("--content-type", default=None, metavar="TYPE",
                            help="the payload's MIME type, e.g. application/json")

    common(_common(commands.add_parser(
        "publish", help="publish a message", description="Publish PAYLOAD to TOPIC as a "
        "trionet bus message (what a DistributedApplication consumer receives).")))
    request = _common(commands.add_parser(
        "request", help="send a request and print the reply",
        description="Send PAYLOAD to TOPIC as a request and print the reply's payload."))
    common(request)
    request.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                         help="how long to wait for the reply (default %(default)s)")


# --------------------------------------------------------------------------- registration

_RUNNERS: dict[tuple[str, str], tuple[str, Callable[..., Awaitable[int]]]] = {
    ("mqtt", "pub"): ("trionet mqtt pub", _mqtt_pub),
    ("mqtt", "sub"): ("trionet mqtt sub", _mqtt_sub),
    ("rpc", "call"): ("trionet rpc call", _rpc_call),
    ("aproto", "send"): ("trionet aproto send", _aproto_send),
    ("aproto", "serve"): ("trionet aproto serve", _aproto_serve),
    ("kafka", "produce"): ("trionet kafka produce", _kafka_produce),
    ("kafka", "consume"): ("trionet kafka consume", _kafka_consume),
    ("bus", "publish"): ("trionet bus publish", _bus_publish),
    ("bus", "request"): ("trionet bus request", _bus_request),
}

#: The top-level commands this module adds.
COMMANDS = ("mqtt", "kafka", "bus", "rpc", "aproto")


def add_commands(sub: Any) -> None:
    """Add the operators' commands to the ``trionet`` sub-parsers *sub*."""
    _add_mqtt(sub)
    _add_kafka(sub)
    _add_bus(sub)
    _add_rpc(sub)
    _add_aproto(sub)


def run_command(args: argparse.Namespace) -> int:
    """Execute a parsed operator's command; returns the exit status."""
    command: str = args.command
    prog, fn = _RUNNERS[command, getattr(args, f"{command}_command")]
    return _run(prog, args, fn)
