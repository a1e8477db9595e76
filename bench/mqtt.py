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
  received per second, from the first publish to the last message received. A subscriber that
  falls behind makes mosquitto drop messages beyond its queue of 1000 (reported as
  ``lost_messages`` in the JSON line).
* ``latency QoS n``: unloaded round trip publish -> receive, one message at a time; p50 (and p99
  in the JSON) in microseconds; the ratio is raw/trionet, so > 1 means trionet is faster.
  Every contender guards the series against a hang with its cheapest timeout: raw paho waits
  with ``Event.wait(10)`` (free), trio and asyncio put one deadline around the whole series. A
  deadline per message would be harness overhead, not client latency: ``trio.fail_after`` costs
  about 15 µs a scope here (a fifth of a round trip), ``asyncio.wait_for`` a task per message.
  At QoS 1, trionet's and aiomqtt's ``publish`` return on PUBACK, so their round trip includes
  the PUBACK; raw paho's ``publish`` returns at once and its worker does not wait for the PUBACK.

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
        pub.publish(topic, PAYLOAD, qos)
        arrived.wait(10)
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
    from trionet.testing import MosquittoServer

    workers = {name: Worker(WORKER_KIND[name]) for name in CONTENDERS}
    results: list[dict[str, Any]] = []
    try:
        with MosquittoServer() as broker:
            base = {"host": broker.info.host, "port": broker.info.port}
            rows = [r for r in _rows(n, latency_n)
                    if not args.only or any(text in r["name"] for text in args.only)]
            for row in rows:
                contenders = row["contenders"]
                values: dict[str, list[float]] = {c: [] for c in contenders}
                p99: dict[str, list[float]] = {c: [] for c in contenders}
                lost: dict[str, int] = dict.fromkeys(contenders, 0)
                job = {**base, "op": row["op"], "qos": row["qos"], "n": row["n"]}
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
                            lost[c] += row["n"] - out["count"]
                results.append({"row": row, "values": values, "p99": p99, "lost": lost})
                print(f"  measured {row['name']}", file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    _report(results, rounds, n)


def _ratio(row: dict[str, Any], values: dict[str, list[float]], c: str, base: str) -> float:
    latency = row["op"] == "latency"
    per_round = [
        (b / v) if latency else (v / b)
        for v, b in zip(values[c], values[base], strict=True)
    ]
    return _median(per_round)


def _report(results: list[dict[str, Any]], rounds: int, n: int) -> None:
    print(f"\n## mqtt ({rounds} rounds, {n} messages of {len(PAYLOAD)} bytes, medians; "
          "throughput ratios = contender/peer, latency ratios = peer/contender, so > 1 is "
          "better for trionet)\n")
    print("| row | unit | raw paho | aiomqtt | trionet | trionet trio | trionet publish() | "
          "trionet/raw | trionet/aiomqtt | trio/raw | trio/aiomqtt | goal | met |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for result in results:
        row, values = result["row"], result["values"]
        latency = row["op"] == "latency"
        unit = "µs p50" if latency else "msg/s"
        med = {c: _median(v) for c, v in values.items()}
        ratios: dict[str, float] = {}
        met: dict[str, bool] = {}
        for t in TRIONETS:
            vs_raw = ratios[f"{t}/raw paho"] = _ratio(row, values, t, "raw paho")
            vs_aio = ratios[f"{t}/aiomqtt"] = _ratio(row, values, t, "aiomqtt")
            met[t] = vs_raw >= 1 / 1.2 if latency else (vs_raw >= 0.9 and vs_aio >= 1.5)
        goal = "≥ 0.83 raw" if latency else "≥ 0.9 raw, ≥ 1.5 aiomqtt"
        cells = [f"{med[c]:,.0f}" if c in med else "" for c in CONTENDERS]
        shown = " | ".join(f"{ratios[f'{t}/{peer}']:.2f}×" for t in TRIONETS
                           for peer in ("raw paho", "aiomqtt"))
        verdict = ", ".join(f"{t}: {'yes' if met[t] else 'NO'}" for t in TRIONETS)
        print(f"| {row['name']} | {unit} | " + " | ".join(cells)
              + f" | {shown} | {goal} | {verdict} |")
        entry: dict[str, Any] = {
            "row": row["name"], "unit": unit, "medians": med, "ratios": ratios, "met": met,
        }
        if "trionet publish()" in values:
            entry["ratios"]["trionet publish()/raw paho"] = _ratio(
                row, values, "trionet publish()", "raw paho")
        if latency:
            entry["p99"] = {c: _median(v) for c, v in result["p99"].items()}
        if any(result["lost"].values()):
            entry["lost_messages"] = result["lost"]
        out.append(entry)
    print()
    print(json.dumps({"bench": "mqtt", "rounds": rounds, "messages": n, "rows": out}))


if __name__ == "__main__":
    main()
