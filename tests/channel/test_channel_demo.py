"""The channel part of ``trionet demo`` and the benchmark script's smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

from trionet.demo._channel import demo

BENCH = Path(__file__).resolve().parents[2] / "bench" / "channel.py"


async def test_demo_reports_requests_and_an_rpc_call() -> None:
    lines: list[str] = []
    with trio.fail_after(20):
        await demo(lines.append)
    text = "\n".join(lines)
    assert "channel server listening on 127.0.0.1:" in text
    assert "got {'echo': ['ping', 42]}" in text
    assert "ZeroDivisionError" in text
    assert "a request cancelled by its deadline" in text
    assert "rpc: remote.add(1, 2) = 3" in text
    assert lines[-1] == "channel and rpc servers stopped"


async def test_benchmark_script_runs() -> None:
    command = [
        sys.executable, str(BENCH), "--quick", "--rounds", "1", "--duration", "0.02",
        "--codecs", "msgpack", "--modes", "seq", "--payloads", "ping",
        "--memory-connections", "20",
    ]  # fmt: skip
    with trio.fail_after(60):
        result = await trio.run_process(command, capture_stdout=True, stderr=subprocess.DEVNULL)
    last = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert last["bench"] == "channel"
    assert [row["row"] for row in last["rows"]] == [
        "msgpack seq ping", "idle memory, KiB per connection (20)"]
    assert set(last["memory_kib_per_connection"]) == {
        "trionet", "aiomas", "raw trio", "raw asyncio"}
