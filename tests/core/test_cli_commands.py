"""The operators' commands, in a subprocess against real servers: ``trionet mqtt pub|sub``
and ``trionet bus publish|request`` (mosquitto), ``trionet kafka produce|consume`` (the Kafka
broker fixture), ``trionet rpc call`` (an RPC server in the test), ``trionet aproto send`` (an
AsyncAProto server in the test) and ``trionet aproto serve`` (its echo server, configured by a
file); failures are one line, with the exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from functools import partial
from typing import Any

import pytest
import trio

from trionet import rpc
from trionet.aproto import Filters, Packet, Server
from trionet.bus import BusMessage, from_url
from trionet.kafka import KafkaAdmin
from trionet.testing import KafkaBroker, MosquittoServer

PATIENCE = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRIONET_DEBUG", None)
    return env


async def trionet(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PATIENCE):
        result: subprocess.CompletedProcess[bytes] = await trio.run_process(
            [sys.executable, "-m", "trionet", *args], stdin=stdin, capture_stdout=True,
            capture_stderr=True, check=False, env=_env(),
        )
    return result


def assert_one_line_failure(result: subprocess.CompletedProcess[bytes], status: int,
                            text: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == status, err
    assert "Traceback" not in err, err
    assert text in err.splitlines()[0], err
    assert len(err.splitlines()) <= 2, err


async def test_mqtt_pub_and_sub(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    url = f"mqtt://{info.host}:{info.port}"
    topic = f"cli/{uuid.uuid4().hex}"
    async with trio.open_nursery() as nursery:
        sub: trio.Process = await nursery.start(partial(
            trio.run_process,
            [sys.executable, "-u", "-m", "trionet", "mqtt", "sub", "-t", f"{topic}/+", "-v",
             "-C", "3", "-q", "1", "--url", url, "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, env=_env(),
        ))
        assert sub.stderr is not None and sub.stdout is not None
        err = b""
        with trio.fail_after(PATIENCE):
            while b"subscribed to" not in err:
                chunk = await sub.stderr.receive_some()
                assert chunk, err.decode()
                err += chunk
        one = await trionet("mqtt", "pub", "--url", url, "-t", f"{topic}/a", "-m", "hellö",
                            "-q", "1")
        assert one.returncode == 0, one.stderr.decode()
        lines = await trionet("mqtt", "pub", "--url", url, "-t", f"{topic}/b", "-q", "2",
                              stdin=b"line one\nline two\n")
        assert lines.returncode == 0, lines.stderr.decode()
        out = b""
        with trio.fail_after(PATIENCE):
            async for chunk in sub.stdout:
                out += chunk
            status = await sub.wait()  # -C 3: exits by itself
    assert status == 0, err.decode()
    assert out.decode().splitlines() == [
        f"{topic}/a hellö", f"{topic}/b line one", f"{topic}/b line two"]


async def test_mqtt_refused_is_one_line() -> None:
    with trio.socket.socket() as sock:  # a port that nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await trionet("mqtt", "pub", "--url", f"mqtt://127.0.0.1:{port}", "-t", "x",
                           "-m", "y")
    assert_one_line_failure(result, 1, "trionet mqtt pub: ")
    result = await trionet("mqtt", "sub", "--url", "mqtp://127.0.0.1:1883", "-t", "x")
    assert_one_line_failure(result, 2, "trionet mqtt sub: ")


class Calculator:
    router = rpc.Service()

    @rpc.expose
    def add(self, a: int, b: int) -> int:
        return a + b

    @rpc.expose
    def greet(self, name: str = "world", punctuation: str = "!") -> dict[str, Any]:
        return {"greeting": f"hello {name}{punctuation}"}


class Root:
    router = rpc.Service(["calc"])

    def __init__(self) -> None:
        self.calc = Calculator()


async def test_rpc_call() -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), Root())
        where = f"{address[0]}:{address[1]}"
        added = await trionet("rpc", "call", where, "calc/add", "[1, 2]")
        greeted = await trionet("rpc", "call", where, "calc.greet", '["trio"]',
                                "--kwargs", '{"punctuation": "?"}')
        missing = await trionet("rpc", "call", where, "calc/missing")
        bad_json = await trionet("rpc", "call", where, "calc/add", "[1,")
        nursery.cancel_scope.cancel()
    assert added.returncode == 0, added.stderr.decode()
    assert json.loads(added.stdout) == 3
    assert greeted.returncode == 0, greeted.stderr.decode()
    assert json.loads(greeted.stdout) == {"greeting": "hello trio?"}
    assert_one_line_failure(missing, 1, "trionet rpc call: ")
    assert "missing" in missing.stderr.decode()
    assert_one_line_failure(bad_json, 2, "trionet rpc call: ARGS is not valid JSON")


async def test_aproto_send() -> None:
    server = Server("127.0.0.1", 0)

    @server.add_handler(Filters.Fields(cmd="ping$", n=None))
    async def ping(client: Any, packet: Packet) -> None:
        await client.send(Packet({"status": "ok", "echo": packet.fields},
                                 encoding=packet.encoding))

    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        reply = await trionet("aproto", "send", f"127.0.0.1:{port}", '{"cmd": "ping", "n": 1}')
        silent = await trionet("aproto", "send", f"127.0.0.1:{port}", '{"cmd": "nobody"}',
                               "--timeout", "0.5")
        not_object = await trionet("aproto", "send", f"127.0.0.1:{port}", "[1]")
        server.stop()
    assert reply.returncode == 0, reply.stderr.decode()
    assert json.loads(reply.stdout) == {"status": "ok", "echo": {"cmd": "ping", "n": 1}}
    assert_one_line_failure(silent, 1, "did not answer within 0.5 s")
    assert_one_line_failure(not_object, 2, "PACKET must be a JSON object")


async def _serve_until_line(args: list[str], nursery: trio.Nursery) -> tuple[trio.Process, str]:
    """Start ``trionet aproto serve ARGS``; return the process and its first stdout line."""
    process: trio.Process = await nursery.start(partial(
        trio.run_process, [sys.executable, "-u", "-m", "trionet", "aproto", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, env=_env(),
    ))
    assert process.stdout is not None
    out = b""
    with trio.fail_after(PATIENCE):
        while b"\n" not in out:
            chunk = await process.stdout.receive_some()
            assert chunk, out
            out += chunk
    return process, out.decode().splitlines()[0]


async def test_aproto_serve_echo_from_a_config_file(tmp_path: Any) -> None:
    config = tmp_path / "server.ini"
    config.write_text("[AsyncAPY]\naddr = 127.0.0.1\nport = 0\nheader_size = 4\n")
    async with trio.open_nursery() as nursery:
        process, line = await _serve_until_line(["--config", str(config)], nursery)
        assert line.startswith("serving AsyncAProto on 127.0.0.1:") and line.endswith("(echo)")
        port = line.split(":")[1].split()[0]
        reply = await trionet("aproto", "send", f"127.0.0.1:{port}", '{"cmd": "hi", "n": 2}')
        process.send_signal(2)  # SIGINT: a graceful stop
        with trio.fail_after(PATIENCE):
            status = await process.wait()
    assert reply.returncode == 0, reply.stderr.decode()
    assert json.loads(reply.stdout) == {"cmd": "hi", "n": 2}
    assert status == 0


async def test_aproto_serve_failures_are_one_line(tmp_path: Any) -> None:
    missing = await trionet("aproto", "serve", "--config", str(tmp_path / "nope.ini"))
    assert_one_line_failure(missing, 2, "cannot read config file")
    both = await trionet("aproto", "serve", "os:path", "--config", "x.ini")
    assert_one_line_failure(both, 2, "not both")
    not_a_server = await trionet("aproto", "serve", "os:path")
    assert_one_line_failure(not_a_server, 2, "not a trionet.aproto.Server")


@pytest.mark.parametrize("command", [["mqtt", "pub"], ["mqtt", "sub"], ["rpc", "call"],
                                     ["aproto", "send"], ["aproto", "serve"], ["kafka", "produce"],
                                     ["kafka", "consume"], ["bus", "publish"],
                                     ["bus", "request"]])
def test_help(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "trionet", *command, "--help"],
                            capture_output=True, text=True, timeout=PATIENCE, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: trionet {' '.join(command)}")
    assert "--log-format" in result.stdout


async def test_kafka_produce_and_consume(kafka_broker: KafkaBroker) -> None:
    servers = kafka_broker.info.bootstrap_servers
    topic = f"cli-{uuid.uuid4().hex[:12]}"
    async with KafkaAdmin(servers) as admin:
        await admin.create_topics([topic])
        try:
            one = await trionet("kafka", "produce", "-b", servers, "-t", topic, "-m", "first",
                                "-k", "k1")
            assert one.returncode == 0, one.stderr.decode()
            lines = await trionet("kafka", "produce", "-b", servers, "-t", topic,
                                  stdin=b"second\nthird\n")
            assert lines.returncode == 0, lines.stderr.decode()
            consumed = await trionet("kafka", "consume", "-b", servers, "-t", topic, "-C", "3",
                                     "-K", ":")
        finally:
            with trio.CancelScope(shield=True):
                await admin.delete_topics([topic], missing_ok=True)
    assert consumed.returncode == 0, consumed.stderr.decode()
    assert consumed.stdout.decode().splitlines() == ["k1:first", ":second", ":third"]


async def test_kafka_unreachable_is_one_line() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await trionet("kafka", "produce", "-b", f"127.0.0.1:{port}", "-t", "x", "-m", "y")
    assert_one_line_failure(result, 1, "cannot reach the Kafka bootstrap servers")


async def test_bus_publish_and_request(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    url = f"mqtt://{info.host}:{info.port}"
    base = f"cli/bus/{uuid.uuid4().hex}"
    async with from_url(url).create_socket([f"{base}/#"]) as socket, \
            trio.open_nursery() as nursery:
        got: list[BusMessage] = []

        async def respond() -> None:
            async for message in socket:
                got.append(message)
                if message.response_topic is not None:
                    await socket.reply(message, b"pong: " + message.payload)

        nursery.start_soon(respond)
        published = await trionet("bus", "publish", f"{base}/events", '{"n": 1}',
                                  "--broker", url, "--content-type", "application/json")
        answered = await trionet("bus", "request", f"{base}/ping", "hello", "--broker", url)
        nobody = await trionet("bus", "request", "cli/bus/nobody", "x", "--broker", url,
                               "--timeout", "0.5")
        private = await trionet("bus", "publish", "t", "p", "--broker", "memory://")
        nursery.cancel_scope.cancel()
    assert published.returncode == 0, published.stderr.decode()
    assert answered.returncode == 0, answered.stderr.decode()
    assert answered.stdout.decode() == "pong: hello\n"
    event = next(m for m in got if m.topic == f"{base}/events")
    assert event.json() == {"n": 1} and event.content_type == "application/json"
    assert_one_line_failure(nobody, 1, "no reply to the request on cli/bus/nobody within 0.5 s")
    assert_one_line_failure(private, 2, "a memory:// broker is private to a process")
