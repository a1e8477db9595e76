"""MQTT throughput and latency: trionet vs raw paho-mqtt vs aiomqtt, in one run.

One private mosquitto (``trionet.testing.MosquittoServer``) serves every contender. Each
contender lives in its own long-running worker process (aiomqtt needs asyncio, and trionet never
imports it); the parent sends one measurement at a time and the contenders are interleaved round
by round, alternating the order.

Contenders:

* ``raw paho``: paho-mqtt 2.2 with its own network thread (``loop_start()``), as its
  documentation recommends; ``publish()`` returns at once and the worker then waits on every
  ``MQTTMessageInfo`` (no ``on_publish`` callback, so paho builds no per-message callback
  objects). Subscribers count in ``on_message``. Default in-flight window (20).
* ``aiomqtt``: aiomqtt 2.5 on asyncio (bench-only dependency). Publishes are awaited
  concurrently (``asyncio.gather`` over chunks of 1000), receivers iterate ``client.messages``.
* ``trionet``: the default backend (paho on a network thread owned by the client's nursery),
  ``MQTTClient.publish_many`` (the bulk API); receivers iterate a ``client.subscription(...)``.
* ``trionet trio``: the same with ``backend="trio"`` (no network thread: paho's socket is
  driven by ``trio.lowlevel.wait_readable/wait_writable``).
* ``trionet publish()``: default backend, one ``await client.publish(...)`` per message; at
  QoS 1/2 from 20 tasks at once (QoS 1/2 ``publish`` returns on PUBACK/PUBCOMP, so one task is
  latency-bound).

Rows (20,000 messages of 32 bytes; ``--quick``: 2,000):

* ``publish QoS n``: time until every publish completed its handshake (QoS 0: written).
* ``end-to-end QoS n``: a publisher and a subscriber client in the same process; messages
  received per second, from the first publish to the last message received. Every contender's
  received count is checked against the sent count in every round: a row in which any
  contender lost a message fails (``met`` false, ``lost_messages`` in the JSON line, ``LOST``
  in the table). mosquitto's default queue of 1000 messages per client silently dropped a fifth
  to a half of the messages of a subscriber that fell behind, so the benchmark broker is
  configured not to drop any (``BROKER_LIMITS``: no per-client queue limit); the in-flight
  window stays at its default of 20, the same for everyone.
* ``latency QoS n``: unloaded round trip publish -> receive, one message at a time; p50 (and p99
  in the JSON) in microseconds; the ratio is raw/trionet, so > 1 means trionet is faster.
  Every contender guards the series against a hang with its cheapest timeout: raw paho waits
  with ``Event.wait(10)`` (free), trio and asyncio put one deadline around the whole series. A
  deadline per message would be harness overhead, not client latency: ``trio.fail_after`` costs
  about 15 µs a scope here (a fifth of a round trip), ``asyncio.wait_for`` a task per message.
  At QoS 1 every contender waits for both the PUBACK and the message: trionet's and aiomqtt's
  ``publish`` return on PUBACK, and the raw paho worker calls ``wait_for_publish()`` before
  waiting for the message (like with like). A message that does not arrive fails the run.

Goals (issue 6): trionet >= 0.9x raw paho and >= 1.5x aiomqtt on every publish and end-to-end
row; unloaded p50 latency <= 1.2x raw paho (ratio >= 0.83). Checked for each trionet backend.

Run: ``.venv/bin/python bench/mqtt.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

CONTENDERS = ("raw paho", "aiomqtt", "trionet", "trionet trio", "trionet publish()")
TRIONETS = ("trionet", "trionet trio")
WORKER_KIND = {"raw paho": "raw", "aiomqtt": "aiomqtt", "trionet": "trionet-thread",
               "trionet trio": "trionet-trio", "trionet publish()": "trionet-thread-publish"}
PAYLOAD = b"x" * 32
WINDOW = 20  # QoS 1/2 in flight, the same for everyone (paho's and mosquitto's default)
TIMEOUT = 60.0
SETTLE = 5.0  # end-to-end: after the last publish, wait this long at most for stragglers
#: The benchmark broker queues without limit instead of dropping (mosquitto's defaults: 1000
#: messages per client, then QoS 1/2 messages are dropped silently, as QoS 0 ones are).
BROKER_LIMITS = "max_queued_messages 0\nmax_queued_bytes 0\n"


# -- workers (each runs in its own process) -----------------------------------------------------


def _topic() -> str:
    return f"bench/{uuid.uuid4().hex[:10]}"


def _raw_worker(job: dict[str, Any]) -> dict[str, Any]:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port, n, qos, op = job["host"], job["port"], job["n"], job["qos"], job["op"]

    def client() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
        c.connect(host, port)
        c.loop_start()
        deadline = time.monotonic() + 10
        while not c.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("paho could not connect")
            time.sleep(0.005)
        return c

    topic = _topic()
    if op == "publish":
        pub = client()
        t0 = time.perf_counter()
        infos = [pub.publish(topic, PAYLOAD, qos) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
        elapsed = time.perf_counter() - t0
        if not all(info.is_published() for info in infos):
            raise RuntimeError("raw paho: a publish did not complete")
        pub.disconnect()
        pub.loop_stop()
        return {"elapsed": elapsed, "count": n}
    sub = client()
    subscribed = threading.Event()
    sub.on_subscribe = lambda *args: subscribed.set()
    if op == "e2e":
        received = [0]
        done = threading.Event()
        last = [0.0]

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            received[0] += 1
            last[0] = time.perf_counter()
            if received[0] == n:
                done.set()

        sub.on_message = on_message
        sub.subscribe(topic, qos)
        subscribed.wait(10)
        pub = client()
        t0 = time.perf_counter()
        infos = [pub.publish(topic, PAYLOAD, qos) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
        if not all(info.is_published() for info in infos):
            raise RuntimeError("raw paho: a publish did not complete")
        done.wait(SETTLE)
        elapsed = (last[0] or time.perf_counter()) - t0
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
        return {"elapsed": elapsed, "count": received[0]}
    # latency
    arrived = threading.Event()
    sub.on_message = lambda c, userdata, message: arrived.set()
    sub.subscribe(topic, qos)
    subscribed.wait(10)
    pub = client()
    samples = []
    for _ in range(n):
        arrived.clear()
        t0 = time.perf_counter()
        info = pub.publish(topic, PAYLOAD, qos)
        if qos:  # like trionet's and aiomqtt's publish(): until the PUBACK (docstring)
            info.wait_for_publish(10)
            if not info.is_published():
                raise RuntimeError("raw paho: no PUBACK for a latency message")
        if not arrived.wait(10):
            raise RuntimeError("raw paho: a latency message was not delivered")
        samples.append((time.perf_counter() - t0) * 1e6)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return {"samples": samples}


def _aiomqtt_worker(job: dict[str, Any]) -> dict[str, Any]:
    import asyncio
    import contextlib
    import logging

    import aiomqtt

    host, port, n, qos, op = job["host"], job["port"], job["n"], job["qos"], job["op"]
    quiet = logging.getLogger("bench.aiomqtt")  # it warns about every pending publish beyond 10
    quiet.setLevel(logging.ERROR)

    def client() -> aiomqtt.Client:
        return aiomqtt.Client(host, port, identifier=uuid.uuid4().hex,
                              max_inflight_messages=WINDOW, logger=quiet)

    async def publish_all(pub: aiomqtt.Client, topic: str) -> None:
        for start in range(0, n, 1000):
            await asyncio.gather(*(pub.publish(topic, PAYLOAD, qos)
                                   for _ in range(min(1000, n - start))))

    async def main() -> dict[str, Any]:
        topic = _topic()
        if op == "publish":
            async with client() as pub:
                t0 = time.perf_counter()
                await publish_all(pub, topic)
                return {"elapsed": time.perf_counter() - t0, "count": n}
        async with client() as sub, client() as pub:
            await sub.subscribe(topic, qos)
            if op == "e2e":
                received = 0
                last = 0.0

                async def consume() -> None:
                    nonlocal received, last
                    async for _ in sub.messages:
                        received += 1
                        last = time.perf_counter()
                        if received == n:
                            return

                t0 = time.perf_counter()
                consumer = asyncio.ensure_future(consume())
                await publish_all(pub, topic)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(consumer, SETTLE)
                return {"elapsed": (last or time.perf_counter()) - t0, "count": received}
            samples = []
            messages = sub.messages.__aiter__()
            async with asyncio.timeout(TIMEOUT):  # one deadline for the series (docstring)
                for _ in range(n):
                    t0 = time.perf_counter()
                    await pub.publish(topic, PAYLOAD, qos)
                    await messages.__anext__()
                    samples.append((time.perf_counter() - t0) * 1e6)
            return {"samples": samples}

    return asyncio.run(main())


def _trionet_worker(job: dict[str, Any], *, bulk: bool, backend: str) -> dict[str, Any]:
    import trio

    from trionet.mqtt import MQTTClient

    host, port, n, qos, op = job["host"], job["port"], job["n"], job["qos"], job["op"]

    async def publish_all(pub: MQTTClient, topic: str) -> None:
        if bulk:
            await pub.publish_many(((topic, PAYLOAD) for _ in range(n)), qos=qos)
        elif qos == 0:
            for _ in range(n):
                await pub.publish(topic, PAYLOAD, qos)
        else:
            async def worker(count: int) -> None:
                for _ in range(count):
                    await pub.publish(topic, PAYLOAD, qos)

            async with trio.open_nursery() as nursery:
                for i in range(WINDOW):
                    nursery.start_soon(worker, n // WINDOW + (i < n % WINDOW))

    async def main() -> dict[str, Any]:
        topic = _topic()
        if op == "publish":
            async with MQTTClient(max_inflight=WINDOW, backend=backend) as pub:  # type: ignore[arg-type]
                await pub.connect(host, port)
                t0 = time.perf_counter()
                await publish_all(pub, topic)
                return {"elapsed": time.perf_counter() - t0, "count": n}
        async with (
            MQTTClient(backend=backend) as sub,  # type: ignore[arg-type]
            MQTTClient(max_inflight=WINDOW, backend=backend) as pub,  # type: ignore[arg-type]
        ):
            await sub.connect(host, port)
            await pub.connect(host, port)
            async with sub.subscription(topic, qos, max_buffer_size=1000) as messages:
                if op == "e2e":
                    received = 0
                    last = 0.0
                    t0 = time.perf_counter()

                    async def publish_then_settle(cancel: trio.CancelScope) -> None:
                        await publish_all(pub, topic)
                        await trio.sleep(SETTLE)
                        cancel.cancel()

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(publish_then_settle, nursery.cancel_scope)
                        async for _ in messages:
                            received += 1
                            last = time.perf_counter()
                            if received == n:
                                break
                        nursery.cancel_scope.cancel()
                    return {"elapsed": (last or time.perf_counter()) - t0, "count": received}
                samples = []
                with trio.fail_after(TIMEOUT):  # one deadline for the series (docstring)
                    for _ in range(n):
                        t0 = time.perf_counter()
                        await pub.publish(topic, PAYLOAD, qos)
                        await messages.receive()
                        samples.append((time.perf_counter() - t0) * 1e6)
                return {"samples": samples}

    result: dict[str, Any] = trio.run(main)
    return result


def worker_main(kind: str) -> None:
    """Serve measurement requests (one JSON line each) on stdin until EOF."""
    if kind in ("raw", "aiomqtt"):  # a peer's process never imports trionet: checked
        from _bounds import forbid_trionet

        forbid_trionet()
    for line in sys.stdin:
        job = json.loads(line)
        if kind == "raw":
            result = _raw_worker(job)
        elif kind == "aiomqtt":
            result = _aiomqtt_worker(job)
        else:
            _, backend, *style = kind.split("-")
            result = _trionet_worker(job, bulk=not style, backend=backend)
        print(json.dumps(result), flush=True)


# -- the parent: rounds, medians, ratios --------------------------------------------------------


class Worker:
    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a benchmark worker died")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _rows(n: int, latency_n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for qos in (0, 1, 2):
        rows.append({"name": f"publish QoS {qos}", "op": "publish", "qos": qos, "n": n,
                     "contenders": CONTENDERS})
    for qos in (0, 1):
        rows.append({"name": f"end-to-end QoS {qos}", "op": "e2e", "qos": qos, "n": n,
                     "contenders": CONTENDERS[:4]})
    for qos in (0, 1):
        rows.append({"name": f"latency QoS {qos}", "op": "latency", "qos": qos,
                     "n": latency_n, "contenders": CONTENDERS[:4]})
    return rows


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2,000 messages")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    parser.add_argument("--only", action="append", default=None, metavar="TEXT",
                        help="run only rows whose name contains TEXT (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    rounds = args.rounds or (2 if args.quick else 5)
    n = 2000 if args.quick else 20000
    latency_n = 100 if args.quick else 500

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    from _harness import loadavg

    from trionet.testing import MosquittoServer

    workers = {name: Worker(WORKER_KIND[name]) for name in CONTENDERS}
    results: list[dict[str, Any]] = []
    try:
        with MosquittoServer(extra_config=BROKER_LIMITS) as broker:
            base = {"host": broker.info.host, "port": broker.info.port}
            rows = [r for r in _rows(n, latency_n)
                    if not args.only or any(text in r["name"] for text in args.only)]
            for row in rows:
                contenders = row["contenders"]
                values: dict[str, list[float]] = {c: [] for c in contenders}
                p99: dict[str, list[float]] = {c: [] for c in contenders}
                lost: dict[str, list[int]] = {c: [] for c in contenders}
                job = {**base, "op": row["op"], "qos": row["qos"], "n": row["n"]}
                load_before = loadavg()
                for c in contenders:  # warm-up (imports, first connection), not measured
                    workers[c].run({**job, "n": min(200, row["n"])})
                for r in range(rounds):
                    order = contenders if r % 2 == 0 else tuple(reversed(contenders))
                    for c in order:
                        out = workers[c].run(job)
                        if "samples" in out:
                            samples = sorted(out["samples"])
                            values[c].append(_median(samples))
                            p99[c].append(samples[int(len(samples) * 0.99) - 1])
                        else:
                            values[c].append(out["count"] / out["elapsed"])
                            lost[c].append(row["n"] - out["count"])  # every contender, round
                results.append({"row": row, "values": values, "p99": p99, "lost": lost,
                                "load": (load_before, loadavg())})
                print(f"  measured {row['name']} (load {load_before} -> {loadavg()})",
                      file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    _report(results, rounds, n)


def _ratios(row: dict[str, Any], values: dict[str, list[float]], c: str, base: str
            ) -> list[float]:
    """Per-round ratios of contender *c* against *base* (> 1: *c* is better)."""
    latency = row["op"] == "latency"
    return [(b / v) if latency else (v / b) for v, b in zip(values[c], values[base], strict=True)]


def _ratio(row: dict[str, Any], values: dict[str, list[float]], c: str, base: str) -> float:
    return _median(_ratios(row, values, c, base))


def _spread(values: list[float], fmt: str, suffix: str = "") -> str:
    if not values:
        return ""
    return (f"{format(_median(values), fmt)}{suffix} "
            f"[{format(min(values), fmt)}–{format(max(values), fmt)}]")


def _report(results: list[dict[str, Any]], rounds: int, n: int) -> None:
    print(f"\n## mqtt ({rounds} rounds, {n} messages of {len(PAYLOAD)} bytes: median "
          "[min–max]; throughput ratios = contender/peer, latency ratios = peer/contender, so "
          "> 1 is better for trionet; ratios per round)\n")
    print("| row | unit | raw paho | aiomqtt | trionet | trionet trio | trionet publish() | "
          "trionet/raw | trionet/aiomqtt | trio/raw | trio/aiomqtt | lost | goal | met | "
          "load 1 min before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for result in results:
        row, values = result["row"], result["values"]
        latency = row["op"] == "latency"
        unit = "µs p50" if latency else "msg/s"
        med = {c: _median(v) for c, v in values.items()}
        per_round: dict[str, list[float]] = {}
        for t in TRIONETS:
            for peer in ("raw paho", "aiomqtt"):
                per_round[f"{t}/{peer}"] = _ratios(row, values, t, peer)
        if "trionet publish()" in values:
            per_round["trionet publish()/raw paho"] = _ratios(
                row, values, "trionet publish()", "raw paho")
        ratios = {key: _median(v) for key, v in per_round.items()}
        lost = {c: sum(v) for c, v in result["lost"].items() if any(v)}
        met: dict[str, bool] = {}
        for t in TRIONETS:
            vs_raw, vs_aio = ratios[f"{t}/raw paho"], ratios[f"{t}/aiomqtt"]
            # A row in which any contender lost a message measured nothing comparable: it fails.
            met[t] = not lost and (
                vs_raw >= 1 / 1.2 if latency else (vs_raw >= 0.9 and vs_aio >= 1.5))
        goal = "≥ 0.83 raw" if latency else "≥ 0.9 raw, ≥ 1.5 aiomqtt"
        cells = [_spread(values[c], ",.0f") if c in values else "" for c in CONTENDERS]
        shown = " | ".join(_spread(per_round[f"{t}/{peer}"], ".2f", "×") for t in TRIONETS
                           for peer in ("raw paho", "aiomqtt"))
        lost_cell = ("LOST " + ", ".join(f"{c}: {v}" for c, v in lost.items())) if lost else (
            "" if latency or row["op"] == "publish" else "0")
        verdict = ", ".join(f"{t}: {'yes' if met[t] else 'NO'}" for t in TRIONETS)
        before, after = result["load"]
        load = f"{before[0]:.2f} → {after[0]:.2f}" if before and after else ""
        print(f"| {row['name']} | {unit} | " + " | ".join(cells)
              + f" | {shown} | {lost_cell} | {goal} | {verdict} | {load} |")
        entry: dict[str, Any] = {
            "row": row["name"], "unit": unit, "medians": med, "ratios": ratios, "met": met,
            "goal": {key: (1 / 1.2 if latency else 0.9) if key.endswith("raw paho") else 1.5
                     for key in ratios if key.split("/")[0] in TRIONETS
                     and not (latency and key.endswith("aiomqtt"))},
            "min": {c: min(v) for c, v in values.items() if v},
            "max": {c: max(v) for c, v in values.items() if v},
            "values": values,
            "ratio_min": {key: min(v) for key, v in per_round.items() if v},
            "ratio_max": {key: max(v) for key, v in per_round.items() if v},
            "load_before": before and list(before), "load_after": after and list(after),
        }
        if latency:
            entry["p99"] = {c: _median(v) for c, v in result["p99"].items()}
        elif row["op"] == "e2e":
            entry["lost_messages"] = result["lost"]  # per contender, per round
        out.append(entry)
    print()
    print(json.dumps({"bench": "mqtt", "rounds": rounds, "messages": n, "rows": out}))


if __name__ == "__main__":
    main()
