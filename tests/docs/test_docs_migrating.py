"""What docs/howto/migrating.rst's "Traps" section says, checked against trionet itself.

Each test is one bullet of that section: the run commands, where ``ValidationError`` lives, MQTT
payloads being bytes, ``RemoteException``'s text against aiomas's, and the Kafka wildcard rule.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import aiomas.exceptions
import pytest
import trio

import trionet.errors
from trionet import rpc
from trionet.asgi import ASGIApplication, Request, Response, Router, TestClient, ValidationError
from trionet.bus._kafka import filter_to_pattern
from trionet.errors import ASGIError, RemoteException
from trionet.mqtt import MQTTMessage

PAGE = Path(__file__).resolve().parents[2] / "docs" / "howto" / "migrating.rst"


def traps_section() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("Traps: what still breaks")
    return text[start : text.index("\naiomas (channel, rpc, codecs)\n", start)]


def test_the_page_has_the_five_traps() -> None:
    section = traps_section()
    for lead in (
        "The run command changes.",
        "An exception moves.",
        "MQTT payloads are always bytes.",
        "Remote errors read differently.",
        "Kafka wildcard subscriptions.",
    ):
        assert f"* **{lead}**" in section


def _help(*command: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "trionet", *command, "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_run_commands_exist_with_the_options_named() -> None:
    serve = _help("serve")
    for option in ("--bind", "--workers", "--reload", "--certfile"):
        assert option in serve
    assert "--broker" in _help("run")


async def test_validation_error_is_in_asgi_and_answered_with_400() -> None:
    assert not hasattr(trionet.errors, "ValidationError")
    with pytest.raises(ImportError):
        exec("from trionet.errors import ValidationError")
    assert issubclass(ValidationError, ASGIError)
    assert issubclass(ValidationError, ValueError)

    router = Router()

    @router.route("/check")
    async def check(request: Request) -> Response:
        raise ValidationError("age must be a number")

    async with TestClient(ASGIApplication(router)) as client:
        response = await client.get("/check")
    assert response.status_code == 400
    assert response.json() == {"error": "age must be a number"}


def test_mqtt_payloads_are_bytes() -> None:
    message = MQTTMessage("lamp/state", "on")
    assert message.payload == b"on"
    assert message.payload != "on"  # the silent trap
    with pytest.raises(TypeError):
        message.payload.startswith("a/")  # type: ignore[arg-type]
    assert message.text == "on"
    assert MQTTMessage("t", '{"on": true}').json() == {"on": True}


class _Failing:
    router = rpc.Service()

    @rpc.expose
    async def fail(self) -> None:
        raise LookupError("nope")


async def test_remote_exception_text_differs_from_aiomas() -> None:
    # aiomas's, as the page quotes it.
    theirs = aiomas.exceptions.RemoteException(("127.0.0.1", 5555), "<traceback>")
    assert str(theirs) == "Origin: ('127.0.0.1', 5555)\n<traceback>"
    assert theirs.args == (("127.0.0.1", 5555), "<traceback>")

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), _Failing())
        async with rpc.open_connection(address) as client:
            with pytest.raises(RemoteException) as caught:
                await client.remote.fail()
        nursery.cancel_scope.cancel()
    exc = caught.value
    assert re.fullmatch(r"127\.0\.0\.1:\d+", exc.origin)
    assert str(exc).startswith(f"LookupError raised by {exc.origin}:\nTraceback")
    assert exc.args == (str(exc),)
    assert exc.remote_type == "LookupError"
    assert exc.remote_traceback.rstrip().endswith("LookupError: nope")


def test_kafka_wildcard_filters_are_patterns_over_dotted_names() -> None:
    assert re.fullmatch(filter_to_pattern("sensors/#"), "sensors.kitchen")
    assert re.fullmatch(filter_to_pattern("+/temperature"), "kitchen.temperature")
    assert not re.fullmatch(filter_to_pattern("+/temperature"), "_internal.temperature")
    assert not re.fullmatch(filter_to_pattern("#"), "__consumer_offsets")
