"""What a typed bus handler costs per message against a raw one, on memory://, one run.

Contenders (each a consumer application on its own ``memory://`` broker, fed N messages of
the same ~120-byte JSON order by a producer application, the run timed on the process's CPU
clock, ``time.process_time``, and divided by N):

* ``raw``: ``async def handler(message)``, the payload left as bytes (the floor);
* ``raw + json()``: ``message.json()`` in the handler (what a user did before typed handlers:
  the stdlib parser, no validation);
* ``dataclass``: ``async def handler(order: Order)``, a dataclass, decoded and validated by
  msgspec;
* ``Struct``: the same with a msgspec ``Struct``;
* ``pydantic``: the same with a pydantic model (msgspec parses, pydantic validates; only if
  pydantic is installed).

The contenders alternate round by round (each round in a rotated order); each row prints the
median CPU µs per message with the range [min–max] over the rounds, and the median of the
per-round difference from ``raw`` (the cost of decoding and validating). A message not handled
fails the row (the run is bounded by ``--timeout``).

Run: ``.venv/bin/python bench/bus_typed.py [--quick] [--rounds N] [--messages N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from trionet.bus import BusMessage, BusSocket, DistributedApplication


@dataclasses.dataclass
class OrderDC:
    id: int
    customer: str
    item: str
    qty: int
    price: float
    tags: list[str]


class OrderStruct(msgspec.Struct):
    id: int
    customer: str
    item: str
    qty: int
    price: float
    tags: list[str]


try:
    import pydantic
except ImportError:  # pragma: no cover - a bench dependency
    OrderModel: Any = None
else:
    class OrderModel(pydantic.BaseModel):  # type: ignore[no-redef]
        id: int
        customer: str
        item: str
        qty: int
        price: float
        tags: list[str]


PAYLOAD = json.dumps({"id": 12345, "customer": "ada@example.org", "item": "teapot",
                      "qty": 3, "price": 19.5, "tags": ["kitchen", "gift"]}).encode()


Build = Callable[[DistributedApplication, list[Any]], None]


def _typed(annotation: Any) -> Build:
    """A consumer whose payload parameter is annotated *annotation*."""

    def build(app: DistributedApplication, count: list[Any]) -> None:
        async def handler(order: Any) -> None:
            count[0] += 1
            if count[0] == count[1]:
                count[2].set()

        handler.__annotations__ = {"order": annotation, "return": None}
        app.application("orders")(handler)

    return build


def _contenders() -> dict[str, Build]:
    def raw(app: DistributedApplication, count: list[Any]) -> None:
        @app.application("orders")
        async def handler(message: BusMessage) -> None:
            count[0] += 1
            if count[0] == count[1]:
                count[2].set()

    def raw_json(app: DistributedApplication, count: list[Any]) -> None:
        @app.application("orders")
        async def handler(message: BusMessage) -> None:
            message.json()
            count[0] += 1
            if count[0] == count[1]:
                count[2].set()

    found: dict[str, Build] = {"raw": raw, "raw + json()": raw_json,
                               "dataclass": _typed(OrderDC), "Struct": _typed(OrderStruct)}
    if OrderModel is not None:
        found["pydantic"] = _typed(OrderModel)
    return found


async def measure(name: str, build: Build,
                  messages: int, limit: float, serial: int) -> float:
    """CPU seconds per message for one contender (fresh broker, app built before timing)."""
    app = DistributedApplication(f"memory://typed-bench-{serial}")
    done = trio.Event()
    count: list[Any] = [0, messages, done]  # handled, expected, set when all are handled
    build(app, count)
    started: list[float] = []

    @app.producer()
    async def produce(socket: BusSocket) -> None:
        started.append(time.process_time())
        for _ in range(messages):
            await socket.publish(BusMessage(PAYLOAD, "orders"))

    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        with trio.move_on_after(limit):
            await done.wait()
        ended = time.process_time()
        app.stop()
    if count[0] != messages:
        raise RuntimeError(f"{name}: {count[0]} of {messages} messages handled (lost)")
    return (ended - started[0]) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5000 messages")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    messages = args.messages or (5000 if args.quick else 20000)
    contenders = _contenders()
    names = list(contenders)
    results: dict[str, list[float]] = {name: [] for name in names}
    failed: dict[str, str] = {}

    async def run() -> None:
        serial = 0
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                if name in failed:
                    continue
                serial += 1
                try:
                    results[name].append(
                        await measure(name, contenders[name], messages, args.timeout, serial))
                except RuntimeError as exc:
                    failed[name] = str(exc)

    trio.run(run)
    print(f"bus typed handlers, memory://, {messages} messages of {len(PAYLOAD)} B, "
          f"{rounds} interleaved rounds; CPU µs per message (process_time), "
          "median [min-max]")
    raw = results["raw"]
    rows = []
    for name in names:
        if name in failed:
            print(f"  {name:<14} FAILED: {failed[name]}")
            rows.append({"row": name, "failed": failed[name]})
            continue
        values = [v * 1e6 for v in results[name]]
        extra = [(v - r) * 1e6 for v, r in zip(results[name], raw, strict=False)]
        line = (f"  {name:<14} {statistics.median(values):7.2f} "
                f"[{min(values):.2f}-{max(values):.2f}]")
        if name != "raw" and extra:
            line += (f"   +{statistics.median(extra):.2f} µs vs raw "
                     f"[{min(extra):.2f}-{max(extra):.2f}]")
        print(line)
        rows.append({"row": name, "cpu_us_per_message": values,
                     "extra_us_vs_raw": extra if name != "raw" else []})
    print(json.dumps({"bench": "bus_typed", "messages": messages, "rounds": rounds,
                      "rows": rows}))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
