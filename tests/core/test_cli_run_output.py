"""What ``trionet run`` says while it starts: the broker, each application and its
subscriptions, a warning for the process-private ``memory://`` broker, and one "ready" line
once every consumer is subscribed (in a subprocess, against a real mosquitto for MQTT)."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import trio
from cli_helpers import Command, start_command

from trionet.bus import BusMessage, SocketProviderFactory
from trionet.testing import MosquittoServer

BUS_APP = textwrap.dedent('''
    from trionet.bus import DistributedApplication

    app = DistributedApplication()


    @app.application(["cli/orders/+", "cli/refunds/#"])
    async def orders(message, socket):
        print("got", message.topic, message.payload.decode(), flush=True)


    @app.producer()
    async def hello(socket):
        pass
''')


async def start(nursery: trio.Nursery, cwd: Path, *args: str) -> Command:
    (cwd / "cli_run_app.py").write_text(BUS_APP)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *sys.path])
    env.pop("TRIONET_DEBUG", None)
    return await start_command(nursery, ["run", "cli_run_app:app", *args], cwd=cwd, env=env)


async def test_run_announces_memory_broker_and_warns(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        command = await start(nursery, tmp_path)
        await command.wait_for(r"ready: 1 consumer\(s\) subscribed, 1 producer\(s\) started")
        status = await command.stop()
    out = command.output
    assert status == 0, out
    assert "Traceback" not in out, out
    assert "running cli_run_app:app: 2 application(s), default broker memory://" in out
    assert "orders (consumer) on memory://: subscribes to cli/orders/+, cli/refunds/#" in out
    assert "hello (producer) on memory://" in out
    assert "WARNING trionet.run [-] the memory:// broker is private to this process" in out
    assert len(re.findall("ready:", out)) == 1, out
    # The plan comes before the ready line.
    assert out.index("subscribes to") < out.index("ready:")


async def test_run_ready_means_subscribed_on_mqtt(tmp_path: Path,
                                                  shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    url = (f"mqtt://{info.username}:{info.password}@{info.host}:{info.auth_port}"
           "?allow_insecure_auth=true")
    async with trio.open_nursery() as nursery:
        command = await start(nursery, tmp_path, "--broker", url)
        await command.wait_for("ready:")
        # Subscribed by the time "ready" is printed: a message published now arrives.
        publisher = SocketProviderFactory.from_url(f"mqtt://{info.host}:{info.port}")
        async with publisher.create_socket() as socket:
            await socket.publish(BusMessage(b"seven", "cli/orders/7"))
        await command.wait_for("got cli/orders/7 seven")
        status = await command.stop()
    out = command.output
    assert status == 0, out
    assert f"default broker mqtt://{info.username}:***@{info.host}:{info.auth_port}" in out, out
    assert info.password not in out, out  # the password is never printed
    assert "private to this process" not in out, out
