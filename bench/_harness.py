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
from typing import Any

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


@dataclass(frozen=True)
class Goal:
    """One goal of a row: ``contender``'s ratio over ``baseline`` at least ``ratio``.

    Ratios are oriented so that > 1 means the contender is better (for lower-is-better units
    such as latency or ms, the ratio is baseline / contender). ``baseline`` defaults to the
    row's baseline (its first contender), ``contender`` to the row's last one (trionet).
    """

    ratio: float
    baseline: str | None = None
    contender: str | None = None


@dataclass
class Row:
    name: str
    contenders: list[Contender]
    goal: float | None = None
    """Minimum acceptable ratio of the *last* contender (trionet) over the baseline; the same as
    ``goals=[Goal(goal)]``."""
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
    goals: list[Goal] = field(default_factory=list)
    """More goals (e.g. against a second peer, ``Goal(0.9, baseline="aiokafka")``), judged
    beside ``goal`` from the same rounds; each is shown, and judged, on its own."""
    failed: str | None = None
    """Set (before the report) when the row measured nothing comparable, e.g. a contender lost
    messages: every goal of the row is then reported as missed, with this reason."""

    details: dict[str, object] = field(default_factory=dict)
    """More keys for the row's entry in the JSON line (e.g. ``lost_messages``)."""

    def all_goals(self) -> list[Goal]:
        return ([Goal(self.goal)] if self.goal is not None else []) + list(self.goals)


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
    A script that must look at the measurements before the report (to fail a row that lost
    messages, say) calls ``measure_rows`` and then ``report_rows`` itself.
    """
    measure_rows(rows, rounds=rounds)
    report_rows(bench, rows, rounds=rounds, note=note, extra=extra)
    return rows


def measure_rows(rows: list[Row], *, rounds: int) -> list[Row]:
    """Measures every row: ``rounds`` interleaved rounds, ratios against the baseline."""
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
                    row.ratios.setdefault(c.name, []).append(
                        _oriented(row, this_round[c.name], this_round[base]))
    for row in rows:
        if row.replays is not None:
            row.load_before, row.load_after = row.replays.load_before, row.replays.load_after
    return rows


def _oriented(row: Row, mine: float, theirs: float) -> float:
    """The ratio of ``mine`` over ``theirs`` such that > 1 means ``mine`` is better."""
    if _higher(row):
        return mine / theirs if theirs else float("inf")
    return theirs / mine if mine else float("inf")  # e.g. latency: lower is better


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def goal_key(row: Row, goal: Goal) -> str:
    """The key of ``goal``'s ratio in the row's ``ratios``: the contender's name when it is
    judged against the row's baseline, else ``"<contender>/<baseline>"``."""
    contender = goal.contender or row.contenders[-1].name
    baseline = goal.baseline or row.contenders[0].name
    return contender if baseline == row.contenders[0].name else f"{contender}/{baseline}"


def _extra_ratios(row: Row) -> dict[str, list[float]]:
    """Per-round ratios against the goals' other baselines (e.g. trionet/aiokafka).

    Computed for each goal's contender and every contender named ``trionet...``, from the same
    rounds' values.
    """
    base = row.contenders[0].name
    names = [c.name for c in row.contenders]
    out: dict[str, list[float]] = {}
    for goal in row.all_goals():
        other = goal.baseline
        if other is None or other == base:
            continue
        judged = goal.contender or names[-1]
        for name in names:
            if name in (base, other) or not (name == judged or name.startswith("trionet")):
                continue
            mine, theirs = row.results.get(name, []), row.results.get(other, [])
            if mine and theirs:
                out[f"{name}/{other}"] = [_oriented(row, m, t)
                                          for m, t in zip(mine, theirs, strict=True)]
    return out


def _judge(row: Row, ratio_spreads: dict[str, tuple[float, float, float]],
           meds: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per goal (and one for ``limit``): what it asks, the value, whether it was met.

    ``met`` is ``False`` for every goal of a failed row, and for a goal whose ratio was not
    measured (a contender missing from the run).
    """
    last = row.contenders[-1].name
    base = row.contenders[0].name
    entries: list[dict[str, Any]] = []
    for goal in row.all_goals():
        key = goal_key(row, goal)
        spread = ratio_spreads.get(key)
        entries.append({
            "key": key,
            "contender": goal.contender or last,
            "baseline": goal.baseline or base,
            "goal": goal.ratio,
            "ratio": None if spread is None else spread[1],
            "ratio_min": None if spread is None else spread[0],
            "ratio_max": None if spread is None else spread[2],
            "met": row.failed is None and spread is not None and spread[1] >= goal.ratio,
        })
    if row.limit is not None:
        value = meds.get(last)
        ok = value is not None and (value >= row.limit if _higher(row) else value <= row.limit)
        entries.append({
            "key": "limit",
            "contender": last,
            "limit": row.limit,
            "unit": row.unit,
            "higher_is_better": _higher(row),
            "value": value,
            "met": row.failed is None and ok,
        })
    return entries


def _goal_text(row: Row, entry: dict[str, Any]) -> str:
    """One goal as the table shows it, e.g. ``≥ 0.9× aiokafka: NO (0.31×)``."""
    if entry["key"] == "limit":
        sign = "≥" if entry["higher_is_better"] else "≤"
        text = f"{entry['contender']} {sign} {entry['limit']:g} {entry['unit']}"
        shown = "" if entry["value"] is None else f" ({_fmt(entry['value'])})"
    else:
        judged = "" if len(row.contenders) <= 2 else f"{entry['contender']} "
        text = f"{judged}≥ {entry['goal']:g}× {entry['baseline']}"
        shown = "" if entry["ratio"] is None else f" ({entry['ratio']:.2f}×)"
    if entry["met"]:
        return f"{text}: yes"
    return f"{text}: **MISSED**{shown}"


def report_rows(bench: str, rows: list[Row], *, rounds: int, note: str = "",
                extra: dict[str, object] | None = None, footer: str = "") -> dict[str, Any]:
    """Prints the Markdown table, then ``footer``, then (last) the JSON line.

    Per row, the JSON line holds ``goal`` (``{ratio key: minimum ratio}``, one entry per goal),
    ``met`` (``{ratio key: bool}``, one entry per goal, plus ``"limit"`` if the row has one),
    ``goals`` (a list with every goal's contender, baseline, goal or limit, value and verdict)
    and ``failed`` (the reason, when the row measured nothing comparable). Returns the JSON
    object (``extra`` keys merged in).
    """
    print(f"\n## {bench} ({rounds} rounds: median [min–max]; "
          "ratio = contender / baseline per round, > 1: the contender is better)")
    if note:
        print(note)
    print()
    print("| row | unit | contenders: median [min–max] | ratio vs baseline: median [min–max] "
          "| goals | met | load 1 min before → after |")
    print("|---|---|---|---|---|---|---|")
    out = []
    for row in rows:
        base = row.contenders[0].name
        ratio_values = {**row.ratios, **_extra_ratios(row)}
        spreads = {name: _spread(vals) for name, vals in row.results.items() if vals}
        ratio_spreads = {name: _spread(vals) for name, vals in ratio_values.items() if vals}
        meds = {name: s[1] for name, s in spreads.items()}
        ratio_meds = {name: s[1] for name, s in ratio_spreads.items()}
        entries = _judge(row, ratio_spreads, meds)
        if row.failed is not None:
            met = f"**FAILED**: {row.failed}"
        elif not entries:
            met = ""
        elif all(e["met"] for e in entries):
            met = "yes"
        else:
            missed = sum(1 for e in entries if not e["met"])
            met = f"**MISSED** {missed} of {len(entries)}" if len(entries) > 1 else "**MISSED**"
        contenders = ", ".join(
            f"{n}: {_fmt(m)} [{_fmt(lo)}–{_fmt(hi)}]" for n, (lo, m, hi) in spreads.items()
        )
        ratios = ", ".join(
            f"{n if '/' in n else f'{n}/{base}'}: {m:.2f}× [{lo:.2f}–{hi:.2f}]"
            for n, (lo, m, hi) in ratio_spreads.items()
        )
        goals = "; ".join(_goal_text(row, e) for e in entries)
        load = (
            ""
            if row.load_before is None and row.load_after is None
            else f"{_fmt_load1(row.load_before)} → {_fmt_load1(row.load_after)}"
        )
        print(f"| {row.name} | {row.unit} | {contenders} | {ratios} | {goals} | {met} | {load} |")
        entry: dict[str, Any] = {
            "row": row.name,
            "unit": row.unit,
            "higher_is_better": _higher(row),
            "baseline": base,
            "medians": meds,
            "ratios": ratio_meds,
            "goal": {e["key"]: e["goal"] for e in entries if e["key"] != "limit"} or None,
            "limit": row.limit,
            "met": {e["key"]: e["met"] for e in entries} or None,
            "goals": entries,
            "min": {n: s[0] for n, s in spreads.items()},
            "max": {n: s[2] for n, s in spreads.items()},
            "ratio_min": {n: s[0] for n, s in ratio_spreads.items()},
            "ratio_max": {n: s[2] for n, s in ratio_spreads.items()},
            "values": {n: list(v) for n, v in row.results.items()},
            "ratio_values": {n: list(v) for n, v in ratio_values.items()},
            "load_before": None if row.load_before is None else list(row.load_before),
            "load_after": None if row.load_after is None else list(row.load_after),
        }
        if row.failed is not None:
            entry["failed"] = row.failed
        entry.update(row.details)
        out.append(entry)
    print()
    if footer:
        print(footer.rstrip("\n"))
        print()
    summary: dict[str, Any] = {"bench": bench, "rounds": rounds, "rows": out}
    if extra:
        summary.update(extra)
    print(json.dumps(summary), flush=True)
    return summary


def _print_table(bench: str, rows: list[Row], rounds: int, note: str,
                 extra: dict[str, object] | None = None) -> None:
    """The table and the JSON line (kept for scripts that measure their rows themselves)."""
    report_rows(bench, rows, rounds=rounds, note=note, extra=extra)


def _fmt_load1(load: Load | None) -> str:
    return "?" if load is None else f"{load[0]:.2f}"
