"""bench/mqtt.py runs (one short round of one row) and counts every contender's messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mqtt.py"


async def test_benchmark_end_to_end_row_counts_messages() -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(BENCH), "--quick", "--rounds", "1", "--only", "end-to-end QoS 1"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert summary["bench"] == "mqtt"
    (row,) = summary["rows"]
    assert row["row"] == "end-to-end QoS 1"
    # Received is counted against sent for every contender in every round; none was dropped
    # by the benchmark's broker (whose queue limits are raised).
    assert row["lost_messages"] == {
        "raw paho": [0], "aiomqtt": [0], "trionet": [0], "trionet trio": [0]}
    assert set(row["met"]) == {"trionet", "trionet trio"}
