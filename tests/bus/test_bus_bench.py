"""bench/bus.py compares the bus with FastStream (run in its own process) on a real mosquitto."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bus.py"


async def test_benchmark_mqtt_rows_include_faststream() -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(BENCH), "--quick", "--rounds", "1", "--only", "mqtt"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert summary["bench"] == "bus"
    rows = {row["row"]: row for row in summary["rows"]}
    raw_rows = {"mqtt produce→consume (QoS 1)", "mqtt request/response"}
    typed_rows = {"mqtt typed produce→consume", "mqtt typed request/response"}
    assert set(rows) == raw_rows | typed_rows
    for name in raw_rows:
        row = rows[name]
        assert set(row["medians"]) == {"trionet.mqtt", "FastStream", "trionet bus"}
        assert "trionet bus/FastStream" in row["ratios"]
        assert set(row["met"]) == set(row["goal"])
        assert row["goal"]["trionet bus/FastStream"] == 0.9
        assert "lost_messages" not in row  # FastStream received every message it sent
    for name in typed_rows:  # typed handlers (msgspec) vs FastStream with a pydantic model
        row = rows[name]
        assert set(row["medians"]) == {"raw bus", "FastStream", "trionet bus"}
        assert row["goal"]["trionet bus/FastStream"] == 1.0
        assert "trionet bus" in row["ratios"]  # typed / raw: the cost of typing
        assert "lost_messages" not in row
