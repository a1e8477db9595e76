"""bench/kafka.py runs (one short round) and ends with its JSON summary line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kafka.py"


async def test_benchmark_quick_round() -> None:
    with trio.fail_after(180):  # seven rows, two record sizes, four processes
        done = await trio.run_process(
            [sys.executable, str(BENCH), "--quick", "--rounds", "1"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert summary["bench"] == "kafka"
    assert summary["records"] == 10_000
    rows = {row["row"]: row for row in summary["rows"]}
    assert set(rows) == {
        "produce 100 B, acks=1", "produce 1 KiB, acks=1", "consume 100 B", "consume 1 KiB",
        "consume 100 B, group member", "latency p50, one record", "latency p99, one record"}
    # The peers users pick instead run (in their own processes) in the produce and consume rows,
    # and trionet is judged against each of them as well as against raw kafka-python.
    for name in ("produce 100 B, acks=1", "produce 1 KiB, acks=1", "consume 100 B",
                 "consume 1 KiB"):
        assert {"raw kafka-python", "aiokafka", "confluent-kafka"} <= set(rows[name]["medians"])
        judged = "trionet send_nowait" if name.startswith("produce") else "trionet async for"
        # trionet on the confluent engine is judged against raw confluent-kafka (issue 19).
        on_confluent = (["trionet confluent send_nowait", "trionet confluent send_many"]
                        if name.startswith("produce")
                        else ["trionet confluent getmany", "trionet confluent async for"])
        assert set(rows[name]["goal"]) == {
            judged, f"{judged}/aiokafka", f"{judged}/confluent-kafka",
            *(f"{contender}/confluent-kafka" for contender in on_confluent)}
        assert set(rows[name]["met"]) == set(rows[name]["goal"])
    # Every producer's records reached the broker.
    assert "lost_records" not in rows["produce 100 B, acks=1"]
    assert "lost_records" not in rows["produce 1 KiB, acks=1"]
    assert set(summary["cpu_overhead_us"]) == {
        *(f"produce {size}, acks=1: {name}" for size in ("100 B", "1 KiB")
          for name in ("trionet send_nowait", "trionet confluent send_nowait",
                       "trionet send_many", "trionet confluent send_many")),
        *(f"consume {size}: {name}" for size in ("100 B", "1 KiB")
          for name in ("trionet getmany", "trionet getmany, decode_in_trio=False",
                       "trionet async for", "trionet confluent getmany",
                       "trionet confluent async for")),
        "consume 100 B, group member: trionet getmany"}
    # End-to-end latency of one record, p50 and p99 (µs), of both raw clients and trionet.
    for name in ("latency p50, one record", "latency p99, one record"):
        assert rows[name]["unit"] == "µs"
        assert {"raw kafka-python", "confluent-kafka", "trionet",
                "trionet confluent"} <= set(rows[name]["medians"])
        assert all(value > 0 for value in rows[name]["medians"].values())
