"""bench/kafka.py runs (one short round) and ends with its JSON summary line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kafka.py"


async def test_benchmark_quick_round() -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(BENCH), "--quick", "--rounds", "1"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert summary["bench"] == "kafka"
    assert summary["records"] == 10_000
    assert {row["row"] for row in summary["rows"]} == {
        "produce 100 B, acks=1", "consume 100 B", "consume 100 B, group member"}
    assert set(summary["cpu_overhead_us"]) == {
        "produce: trionet send_nowait", "consume: trionet getmany",
        "consume: trionet getmany, decode_in_trio=False", "consume: trionet async for",
        "group: trionet getmany"}
