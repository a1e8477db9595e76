"""Shared benchmark harness: interleaved rounds, medians, ratios, one JSON line.

Usage from a bench script::

    from _harness import Contender, Row, main_args, run_rows

    rows = [Row("decode 1KiB", [Contender("struct+msgpack", fn_peer), Contender("trionet", fn)],
                goal=0.9)]
    run_rows("framing", rows, rounds=args.rounds)

A contender's callable does a fixed amount of work and returns how many operations it did; the
harness times it with ``time.perf_counter`` and computes ops/s. The first contender is the
baseline; the ratio reported for every other contender is its ops/s over the baseline's, taken
per round, then the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Contender:
    name: str
    run: Callable[[], float]
    """Does the work once; returns the number of operations done (or, for latency rows with
    ``unit="us"``, the measured latency in microseconds, lower is better)."""


@dataclass
class Row:
    name: str
    contenders: list[Contender]
    goal: float | None = None
    """Minimum acceptable ratio of the *last* contender (trionet) over the baseline."""
    unit: str = "ops/s"
    results: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)


def main_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="2 rounds, small counts")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    return args


def _measure(contender: Contender, unit: str) -> float:
    if unit != "ops/s":
        return contender.run()
    t0 = time.perf_counter()
    ops = contender.run()
    elapsed = time.perf_counter() - t0
    return ops / elapsed if elapsed > 0 else float("inf")


def run_rows(bench: str, rows: list[Row], *, rounds: int, note: str = "") -> list[Row]:
    for row in rows:
        base = row.contenders[0].name
        for r in range(rounds):
            # Alternate the order each round so neither side always runs warm or first.
            order = row.contenders if r % 2 == 0 else list(reversed(row.contenders))
            this_round: dict[str, float] = {}
            for c in order:
                this_round[c.name] = _measure(c, row.unit)
                row.results.setdefault(c.name, []).append(this_round[c.name])
            for c in row.contenders[1:]:
                if row.unit == "ops/s":
                    ratio = this_round[c.name] / this_round[base]
                else:  # latency: lower is better, report baseline/contender
                    ratio = this_round[base] / this_round[c.name]
                row.ratios.setdefault(c.name, []).append(ratio)
        print(f"  measured {row.name}", file=sys.stderr, flush=True)
    _print_table(bench, rows, rounds, note)
    return rows


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _print_table(bench: str, rows: list[Row], rounds: int, note: str) -> None:
    print(f"\n## {bench} ({rounds} rounds, medians; ratio = contender / {{baseline}} per round)")
    if note:
        print(note)
    print()
    print("| row | unit | contenders (median) | ratio vs baseline (median) | goal | met |")
    print("|---|---|---|---|---|---|")
    out = []
    for row in rows:
        base = row.contenders[0].name
        meds = {name: statistics.median(vals) for name, vals in row.results.items()}
        ratio_meds = {name: statistics.median(vals) for name, vals in row.ratios.items()}
        last = row.contenders[-1].name
        ratio = ratio_meds.get(last)
        met = "" if row.goal is None or ratio is None else ("yes" if ratio >= row.goal else "NO")
        contenders = ", ".join(f"{n}: {_fmt(v)}" for n, v in meds.items())
        ratios = ", ".join(f"{n}/{base}: {v:.2f}×" for n, v in ratio_meds.items())
        goal = "" if row.goal is None else f"≥ {row.goal}×"
        print(f"| {row.name} | {row.unit} | {contenders} | {ratios} | {goal} | {met} |")
        out.append(
            {
                "row": row.name,
                "unit": row.unit,
                "baseline": base,
                "medians": meds,
                "ratios": ratio_meds,
                "goal": row.goal,
                "met": None if not met else met == "yes",
            }
        )
    print()
    print(json.dumps({"bench": bench, "rounds": rounds, "rows": out}))
