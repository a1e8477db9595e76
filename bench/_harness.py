"""Shared benchmark harness: interleaved rounds, medians and spreads, ratios, one JSON line.

Usage from a bench script::

    from _harness import Contender, Row, main_args, run_rows

    rows = [Row("decode 1KiB", [Contender("struct+msgpack", fn_peer), Contender("trionet", fn)],
                goal=0.9)]
    run_rows("framing", rows, rounds=args.rounds)

A contender's callable does a fixed amount of work and returns how many operations it did; the
harness times it with ``time.perf_counter`` and computes ops/s. The first contender is the
baseline; the ratio reported for every other contender is its ops/s over the baseline's, taken
per round, then the median over rounds.

The table shows, per row and contender, the median with the spread over rounds as
``[min–max]`` (for values and for ratios), and the 1-minute load average before and after the
row: a row measured while the machine was busy says so. The last line printed is one JSON
object with the same figures (``medians``/``ratios`` as before, plus ``min``/``max``,
``ratio_min``/``ratio_max``, the per-round ``values``/``ratio_values`` and ``load_before``/
``load_after`` as ``[1 min, 5 min, 15 min]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Load = tuple[float, float, float]


def loadavg() -> Load | None:
    """The system's 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


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
    higher_is_better: bool | None = None
    """Direction of the values (default: ``True`` for ``ops/s``, else ``False``). Only
    ``ops/s`` rows are timed by the harness; other units take the callable's return value as
    the measurement, so a row of values measured elsewhere (e.g. wrk's req/s) sets
    ``unit="req/s", higher_is_better=True``. Ratios are always oriented so that > 1 means the
    contender is better than the baseline."""
    results: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    load_before: Load | None = None
    load_after: Load | None = None
    limit: float | None = None
    """An absolute bound on the last contender's median, in ``unit``: at most ``limit`` when
    lower is better (e.g. KiB per idle connection), at least when higher is better. Judged
    with ``goal`` if both are set."""
    replays: Row | None = None
    """Set when this row's contenders hand back values another (earlier) row measured: the
    table then shows that row's load averages, not those at replay time."""


def _higher(row: Row) -> bool:
    return row.unit == "ops/s" if row.higher_is_better is None else row.higher_is_better


@contextlib.contextmanager
def row_load(row: Row) -> Iterator[None]:
    """Records (and prints to stderr) the load average before and after measuring ``row``.

    ``run_rows`` does this itself; a script that runs its rounds by hand wraps them in it.
    """
    row.load_before = loadavg()
    print(f"  measuring {row.name} (load before: {_fmt_load(row.load_before)})",
          file=sys.stderr, flush=True)
    try:
        yield
    finally:
        row.load_after = loadavg()
        print(f"  measured {row.name} (load after: {_fmt_load(row.load_after)})",
              file=sys.stderr, flush=True)


def _fmt_load(load: Load | None) -> str:
    return "n/a" if load is None else " ".join(f"{v:.2f}" for v in load)


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


def run_rows(bench: str, rows: list[Row], *, rounds: int, note: str = "",
             extra: dict[str, object] | None = None) -> list[Row]:
    """Measures every row (interleaved rounds), prints the table and the JSON line.

    ``extra`` keys are added to the JSON line (e.g. idle-memory figures a script measured).
    """
    for row in rows:
        base = row.contenders[0].name
        with row_load(row):
            for r in range(rounds):
                # Alternate the order each round so neither side always runs warm or first.
                order = row.contenders if r % 2 == 0 else list(reversed(row.contenders))
                this_round: dict[str, float] = {}
                for c in order:
                    this_round[c.name] = _measure(c, row.unit)
                    row.results.setdefault(c.name, []).append(this_round[c.name])
                for c in row.contenders[1:]:
                    if _higher(row):
                        ratio = this_round[c.name] / this_round[base]
                    else:  # e.g. latency: lower is better, report baseline/contender
                        ratio = this_round[base] / this_round[c.name]
                    row.ratios.setdefault(c.name, []).append(ratio)
    for row in rows:
        if row.replays is not None:
            row.load_before, row.load_after = row.replays.load_before, row.replays.load_after
    _print_table(bench, rows, rounds, note, extra)
    return rows


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def _print_table(bench: str, rows: list[Row], rounds: int, note: str,
                 extra: dict[str, object] | None = None) -> None:
    """Prints the Markdown table and, last, the JSON line (with ``extra`` keys merged in)."""
    print(f"\n## {bench} ({rounds} rounds: median [min–max]; "
          "ratio = contender / {baseline} per round)")
    if note:
        print(note)
    print()
    print("| row | unit | contenders: median [min–max] | ratio vs baseline: median [min–max] "
          "| goal | met | load 1 min before → after |")
    print("|---|---|---|---|---|---|---|")
    out = []
    for row in rows:
        base = row.contenders[0].name
        spreads = {name: _spread(vals) for name, vals in row.results.items() if vals}
        ratio_spreads = {name: _spread(vals) for name, vals in row.ratios.items() if vals}
        meds = {name: s[1] for name, s in spreads.items()}
        ratio_meds = {name: s[1] for name, s in ratio_spreads.items()}
        last = row.contenders[-1].name
        ratio = ratio_meds.get(last)
        verdicts = []
        goals = []
        if row.goal is not None:
            goals.append(f"≥ {row.goal}×")
            if ratio is not None:
                verdicts.append(ratio >= row.goal)
        if row.limit is not None:
            goals.append(f"{'≥' if _higher(row) else '≤'} {row.limit:g} {row.unit}")
            if last in meds:
                value = meds[last]
                verdicts.append(value >= row.limit if _higher(row) else value <= row.limit)
        met = "" if not verdicts else ("yes" if all(verdicts) else "NO")
        contenders = ", ".join(
            f"{n}: {_fmt(m)} [{_fmt(lo)}–{_fmt(hi)}]" for n, (lo, m, hi) in spreads.items()
        )
        ratios = ", ".join(
            f"{n}/{base}: {m:.2f}× [{lo:.2f}–{hi:.2f}]" for n, (lo, m, hi) in ratio_spreads.items()
        )
        goal = ", ".join(goals)
        load = (
            ""
            if row.load_before is None and row.load_after is None
            else f"{_fmt_load1(row.load_before)} → {_fmt_load1(row.load_after)}"
        )
        print(f"| {row.name} | {row.unit} | {contenders} | {ratios} | {goal} | {met} | {load} |")
        out.append(
            {
                "row": row.name,
                "unit": row.unit,
                "baseline": base,
                "medians": meds,
                "ratios": ratio_meds,
                "goal": row.goal,
                "limit": row.limit,
                "met": None if not met else met == "yes",
                "min": {n: s[0] for n, s in spreads.items()},
                "max": {n: s[2] for n, s in spreads.items()},
                "ratio_min": {n: s[0] for n, s in ratio_spreads.items()},
                "ratio_max": {n: s[2] for n, s in ratio_spreads.items()},
                "values": {n: list(v) for n, v in row.results.items()},
                "ratio_values": {n: list(v) for n, v in row.ratios.items()},
                "load_before": None if row.load_before is None else list(row.load_before),
                "load_after": None if row.load_after is None else list(row.load_after),
            }
        )
    print()
    summary: dict[str, object] = {"bench": bench, "rounds": rounds, "rows": out}
    if extra:
        summary.update(extra)
    print(json.dumps(summary))


def _fmt_load1(load: Load | None) -> str:
    return "?" if load is None else f"{load[0]:.2f}"
