"""The command line's one logging setup: ``--log-format json`` writes one JSON object per
record on stderr (time, level, logger, message, correlation_id), and the correlation id of a
handled bus message is in the records its handler logs (``trionet run`` in a subprocess)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import trio

from trionet.observability import configure_logging, correlation_scope

PATIENCE = 60

APP = textwrap.dedent('''
    import logging

    from trionet.bus import BusMessage, DistributedApplication
    from trionet.observability import correlation_scope

    app = DistributedApplication()
    log = logging.getLogger("cli_log_app")


    @app.application(["logtest/orders"])
    async def orders(message, socket):
        log.info("handled %s: %s", message.topic, message.payload.decode())


    @app.producer()
    async def send(socket):
        with correlation_scope("order-7f3a"):
            await socket.publish(BusMessage("one order", "logtest/orders"))
''')

KEYS = {"time", "level", "logger", "message", "correlation_id"}


async def test_run_json_logs_every_line_with_correlation_id(tmp_path: Path) -> None:
    (tmp_path / "cli_log_app.py").write_text(APP)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    env.pop("TRIONET_DEBUG", None)
    argv = [sys.executable, "-u", "-m", "trionet", "run", "cli_log_app:app",
            "--log-format", "json", "--log-level", "debug"]
    output = b""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(
            trio.run_process, argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
        ))
        assert process.stderr is not None
        with trio.fail_after(PATIENCE):
            while b"handled logtest/orders" not in output:
                chunk = await process.stderr.receive_some()
                assert chunk, f"trionet run ended early:\n{output.decode()}"
                output += chunk
            process.send_signal(signal.SIGTERM)
            async for chunk in process.stderr:
                output += chunk
            status = await process.wait()
    text = output.decode()
    assert status == 0, text
    records = []
    for line in text.splitlines():
        record = json.loads(line)  # every line is a JSON object...
        assert isinstance(record, dict), line
        assert record.keys() >= KEYS, line  # ...with the keys
        records.append(record)
    handled = [r for r in records if r["logger"] == "cli_log_app"]
    assert len(handled) == 1, text
    assert handled[0]["message"] == "handled logtest/orders: one order"
    assert handled[0]["level"] == "INFO"
    assert handled[0]["correlation_id"] == "order-7f3a"
    assert handled[0]["time"].endswith("Z")
    # trionet's own records are JSON too: the plan and the ready line, no correlation id.
    ready = [r for r in records if r["logger"] == "trionet.run" and "ready:" in r["message"]]
    assert len(ready) == 1 and ready[0]["correlation_id"] is None, text


async def test_run_text_format_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "cli_log_app.py").write_text(APP)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    output = b""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(
            trio.run_process, [sys.executable, "-u", "-m", "trionet", "run", "cli_log_app:app"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, check=False,
        ))
        assert process.stderr is not None
        with trio.fail_after(PATIENCE):
            while b"handled logtest/orders" not in output:
                chunk = await process.stderr.receive_some()
                assert chunk, f"trionet run ended early:\n{output.decode()}"
                output += chunk
            process.send_signal(signal.SIGTERM)
            async for chunk in process.stderr:
                output += chunk
            assert await process.wait() == 0, output.decode()
    text = output.decode()
    assert " INFO cli_log_app [order-7f3a] handled logtest/orders: one order" in text, text
    assert not text.lstrip().startswith("{"), text


def test_bad_log_format_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trionet", "run", "x:app", "--log-format", "xml"],
        capture_output=True, text=True, timeout=PATIENCE, check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr
    assert "Traceback" not in result.stderr


def test_configure_logging_json_formatter() -> None:
    stream = io.StringIO()
    handler = configure_logging("debug", "json", logger="trionet.test.json", stream=stream)
    log = logging.getLogger("trionet.test.json")
    try:
        log.propagate = False
        with correlation_scope("req-1"):
            log.warning("ünïcode %d", 5)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "ünïcode 5" and first["correlation_id"] == "req-1"
    assert first["level"] == "WARNING" and first["logger"] == "trionet.test.json"
    assert second["correlation_id"] is None
    assert "ValueError: boom" in second["exception"]


def test_configure_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown logging level 'loud'"):
        configure_logging("loud")
