"""trionet before/after: the benchmarks against an older trionet and this tree, interleaved.

Usage::

    .venv/bin/python bench/compare.py --baseline db0ec5b [--rounds 5] [--quick]
        [--only channel,aproto] [--args channel="--duration 1 --no-memory"]
        [--baseline-scripts current|own] [--baseline-tree PATH] [--timeout 1800]
        [--out bench/report] [--reuse]

Each round runs every chosen ``bench/<name>.py`` (``--rounds 1``, ``--quick`` passed through)
twice, once with trionet from the baseline ref and once with trionet from this tree, one right
after the other: baseline first in odd rounds, current first in even ones, so that neither side
always runs first or on a machine that is getting busier. After ``--rounds`` rounds every
trionet contender of every row (the contenders whose name starts with ``trionet``; the peers run
as the scripts run them, but are not compared) has one value per round on each side, and the
report says, per row and contender:

* the baseline's and the current tree's median with ``[min–max]`` over the rounds;
* the current / baseline ratio of each round, oriented so that > 1 means the current tree is
  better (for times, latencies and memory: the baseline's value over the current's), as the
  median with ``[min–max]``;
* a verdict: ``within noise``; ``**SLOWER** (beyond noise)`` or ``faster (beyond noise)`` when
  every round of one side beat every round of the other (the two ``[min–max]`` ranges do not
  overlap; with *n* rounds a side, the chance of that when nothing changed is 2 / C(2n, n):
  n = 5: 0.8 %); ``too few rounds`` below 4 rounds (the chance is then 3 % or more);
  ``**FAILED**`` when a run of either side failed the row (lost messages or records, as the
  scripts report it) or the script failed.

How the trionet contender is pointed at the baseline: the scripts run in a subprocess with
``PYTHONPATH`` and the working directory set to the tree under test, so that the script, its
server and peer processes (which inherit both) import that tree's ``trionet``. By default
both sides run *this* tree's scripts (the same measurement code): for the baseline they run
from a temporary directory holding a copy of ``bench/`` and a link to the baseline's
``trionet`` package, because some scripts put their own tree first on ``sys.path``.
``--baseline-scripts own`` runs the baseline's own scripts instead (for a script whose
current version needs an API the baseline lacks). Before measuring, each side checks which
``trionet`` it imports.

The baseline tree: an existing clean, detached worktree of the repository at the ref is
reused (e.g. a read-only checkout kept for the purpose); otherwise a ``git worktree add
--detach`` in a temporary directory, removed at the end. ``--baseline-tree PATH`` names one.

Writes ``<out>/BEFORE_AFTER.md`` and ``<out>/BEFORE_AFTER.json``; each run's raw output is kept
as ``<out>/before_after.<script>.<side>.<round>.out`` (not committed), which ``--reuse`` reads
back instead of measuring again (e.g. to rebuild the report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run_all import DEFAULT_TIMEOUT, TIMEOUTS, failure_of, run_saved

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SCRIPTS = ("framing", "aproto", "channel", "mqtt", "kafka", "asgi", "bus", "mail")
"""The scripts issue 18's restructuring affects, in the order they run each round."""
SIDES = ("baseline", "current")
MIN_ROUNDS = 4
"""Below this many rounds a side, non-overlapping ranges happen by chance too often (3 rounds:
10 %) to call a change beyond noise."""


@dataclass
class Side:
    """One trionet under test: where its package is, and how to run a script against it."""

    label: str
    tree: Path
    """The checkout whose ``trionet`` is measured."""
    run_dir: Path
    """Working directory and ``PYTHONPATH`` of its runs (its ``trionet`` is the tree's)."""
    bench_dir: Path
    """Where the scripts it runs are."""
    commit: str
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per script, each round's parsed output (or ``{"error": ...}``)."""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.run_dir)
        return env


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit_of(tree: Path) -> str:
    """``tree``'s HEAD commit (short), ``+dirty`` when trionet/ or bench/ has local changes."""
    try:
        commit = _git("rev-parse", "--short", "HEAD", cwd=tree)
        dirty = _git("status", "--porcelain", "--", "trionet", "bench", cwd=tree)
    except (subprocess.CalledProcessError, OSError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty else "")


def _clean_worktree_at(commit: str) -> Path | None:
    """An existing detached worktree of this repository checked out at ``commit``, clean."""
    listing = _git("worktree", "list", "--porcelain")
    for block in listing.split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in block.splitlines())
        path = Path(fields.get("worktree", ""))
        if "detached" not in fields or fields.get("HEAD") != commit or path == ROOT:
            continue
        try:
            if not _git("status", "--porcelain", "--untracked-files=no", cwd=path):
                return path
        except (subprocess.CalledProcessError, OSError):
            continue
    return None


@contextmanager
def baseline_tree(ref: str, given: str | None, scratch: Path) -> Iterator[Path]:
    """The baseline checkout: ``given``, a clean detached worktree at ``ref``, or a new one
    (``git worktree add --detach`` under ``scratch``, removed on the way out)."""
    if given:
        yield Path(given).resolve()
        return
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    existing = _clean_worktree_at(commit)
    if existing is not None:
        print(f"baseline {ref}: reusing the worktree {existing}", file=sys.stderr, flush=True)
        yield existing
        return
    path = scratch / "baseline-tree"
    print(f"baseline {ref}: git worktree add --detach {path}", file=sys.stderr, flush=True)
    _git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        removed = subprocess.run(["git", "worktree", "remove", "--force", str(path)],
                                 cwd=ROOT, check=False, capture_output=True)
        if removed.returncode != 0:  # e.g. files it cannot delete: remove, then forget it
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False,
                           capture_output=True)


def make_sides(base: Path, scripts: str, scratch: Path) -> list[Side]:
    current = Side("current", ROOT, ROOT, HERE, _commit_of(ROOT))
    if scripts == "own":
        baseline = Side("baseline", base, base, base / "bench", _commit_of(base))
    else:
        # This tree's scripts against the baseline's trionet: a copy of bench/ next to a link
        # to the baseline's package (bus.py and mqtt.py put their script's parent directory
        # first on sys.path, which is then this directory, not the current tree).
        shadow = scratch / "baseline-run"
        shutil.copytree(HERE, shadow / "bench",
                        ignore=shutil.ignore_patterns("report", "results", "__pycache__"))
        (shadow / "trionet").symlink_to(base / "trionet", target_is_directory=True)
        baseline = Side("baseline", base, shadow, shadow / "bench", _commit_of(base))
    return [baseline, current]


def check_import(side: Side) -> str:
    """Where ``trionet`` comes from in ``side``'s runs; exits if it is not the side's tree."""
    probe = subprocess.run(
        [sys.executable, "-c", "import os, trionet; print(os.path.realpath(trionet.__file__))"],
        cwd=side.run_dir, env=side.env(), capture_output=True, text=True, check=False)
    where = probe.stdout.strip()
    expected = os.path.realpath(side.tree / "trionet")
    if probe.returncode != 0 or not where.startswith(expected + os.sep):
        sys.exit(f"{side.label}: trionet imports from {where or probe.stderr.strip()!r}, "
                 f"not from {expected}")
    return where


def run_script(side: Side, name: str, args: argparse.Namespace, extra: list[str],
               timeout: float, raw_dir: Path, round_no: int) -> dict[str, Any]:
    """One run of ``bench/<name>.py`` (one round) against ``side``'s trionet."""
    cmd = [sys.executable, str(side.bench_dir / f"{name}.py"), "--rounds", "1"]
    if args.quick:
        cmd.append("--quick")
    cmd += extra
    print(f"round {round_no}: {name} on {side.label} (limit {timeout:.0f} s) ...",
          file=sys.stderr, flush=True)
    result = run_saved(name, cmd, raw_dir / f"before_after.{name}.{side.label}.{round_no}.out",
                       reuse=args.reuse, timeout=timeout, cwd=side.run_dir, env=side.env())
    result.pop("output", None)
    return result


# -- comparing ----------------------------------------------------------------------------------


def _higher(row: dict[str, Any]) -> bool:
    if "higher_is_better" in row:
        return bool(row["higher_is_better"])
    return str(row.get("unit", "ops/s")).endswith("/s")


def _value(row: dict[str, Any], contender: str) -> float | None:
    values = (row.get("values") or {}).get(contender)
    if values:
        return float(statistics.median(values))
    median = (row.get("medians") or {}).get(contender)
    return None if median is None else float(median)


def _chance_of_disjoint(n: int, m: int) -> float:
    """The chance that n and m values of one distribution fall into two non-overlapping
    ranges (either way round): 2 / C(n + m, n)."""
    return min(1.0, 2 / math.comb(n + m, n))


def compare_rows(name: str, baseline: list[dict[str, Any]], current: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """One entry per (row, trionet contender) seen in any run of the script, in order; a row
    whose values on both sides are another row's (a replay of one measurement) is listed in
    that row's ``same_as`` instead."""
    keys: list[tuple[str, str]] = []
    info: dict[str, dict[str, Any]] = {}
    for run in baseline + current:
        for row in run.get("rows", []):
            info.setdefault(row["row"], row)
            for contender in row.get("medians") or {}:
                if contender.startswith("trionet") and (row["row"], contender) not in keys:
                    keys.append((row["row"], contender))
    out = []
    seen: dict[tuple[str, str, tuple[float, ...], tuple[float, ...]], dict[str, Any]] = {}
    for row_name, contender in keys:
        row = info[row_name]
        higher = _higher(row)
        values: dict[str, list[float]] = {"baseline": [], "current": []}
        ratios: list[float] = []
        failures: list[str] = []
        for b_run, c_run in zip(baseline, current, strict=True):
            pair: dict[str, float | None] = {}
            for label, run in (("baseline", b_run), ("current", c_run)):
                if "error" in run:
                    failures.append(f"{label}: the script {run['error']}")
                    pair[label] = None
                    continue
                found = next((r for r in run["rows"] if r["row"] == row_name), None)
                failure = None if found is None else failure_of(found)
                if failure:
                    failures.append(f"{label}: {failure}")
                value = None if found is None else _value(found, contender)
                pair[label] = value
                if value is not None:
                    values[label].append(value)
            b, c = pair["baseline"], pair["current"]
            if b is not None and c is not None:
                if higher:
                    ratios.append(c / b if b else math.inf)
                else:
                    ratios.append(b / c if c else math.inf)
        entry: dict[str, Any] = {
            "bench": name, "row": row_name, "contender": contender,
            "unit": row.get("unit", "ops/s"), "higher_is_better": higher,
            "values": values, "ratio_values": ratios,
        }
        for label in SIDES:
            vals = values[label]
            entry[label] = ({"median": statistics.median(vals), "min": min(vals),
                             "max": max(vals)} if vals else None)
        entry["ratio"] = statistics.median(ratios) if ratios else None
        entry["ratio_min"] = min(ratios) if ratios else None
        entry["ratio_max"] = max(ratios) if ratios else None
        entry["failed"] = "; ".join(dict.fromkeys(failures)) or None
        entry["verdict"], entry["chance"] = _verdict(entry)
        # A row that replays another row's measurement (asgi's server rows) is the same
        # comparison: shown once, naming every row it stands for.
        same = (contender, entry["unit"], tuple(values["baseline"]), tuple(values["current"]))
        if values["baseline"] and values["current"] and same in seen:
            seen[same]["same_as"].append(row_name)
            continue
        entry["same_as"] = []
        seen[same] = entry
        out.append(entry)
    return out


def _verdict(entry: dict[str, Any]) -> tuple[str, float | None]:
    """(verdict, the chance of ranges this far apart when nothing changed, if they are)."""
    if entry["failed"]:
        return "failed", None
    b, c = entry["baseline"], entry["current"]
    if b is None or c is None:
        return "not measured on both sides", None
    n, m = len(entry["values"]["baseline"]), len(entry["values"]["current"])
    better = c["min"] > b["max"] if entry["higher_is_better"] else c["max"] < b["min"]
    worse = c["max"] < b["min"] if entry["higher_is_better"] else c["min"] > b["max"]
    chance = _chance_of_disjoint(n, m) if better or worse else None
    if min(n, m) < MIN_ROUNDS:
        return "too few rounds", chance
    if worse:
        return "slower", chance
    if better:
        return "faster", chance
    return "within noise", None


VERDICT_TEXT = {
    "slower": "**SLOWER** (beyond noise)",
    "faster": "faster (beyond noise)",
    "within noise": "within noise",
    "too few rounds": "too few rounds to judge",
    "not measured on both sides": "**not measured on both sides**",
    "failed": "**FAILED**",
}


# -- the report ---------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _side_text(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"
    return f"{_fmt(stats['median'])} [{_fmt(stats['min'])}–{_fmt(stats['max'])}]"


def _ratio_text(entry: dict[str, Any]) -> str:
    if entry["ratio"] is None:
        return "n/a"
    return f"{entry['ratio']:.3f}× [{entry['ratio_min']:.3f}–{entry['ratio_max']:.3f}]"


def _geomean_text(entries: list[dict[str, Any]]) -> str:
    """The geometric mean of the rows' median ratios (failed rows left out), or ``n/a``."""
    ratios = [e["ratio"] for e in entries
              if e["ratio"] and not e["failed"] and math.isfinite(e["ratio"])]
    if not ratios:
        return "n/a"
    return f"{math.exp(statistics.fmean(math.log(r) for r in ratios)):.3f}×"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict_text(entry: dict[str, Any]) -> str:
    text = VERDICT_TEXT[entry["verdict"]]
    if entry["failed"]:
        text += f": {entry['failed']}"
    elif entry["chance"] is not None and entry["verdict"] != "too few rounds":
        text += f" (chance {entry['chance']:.1%})"
    return text


def write_report(entries: list[dict[str, Any]], sides: list[Side], names: list[str],
                 out: Path, meta: dict[str, Any]) -> Path:
    base, cur = sides
    md = [
        "# trionet before/after",
        "",
        f"**baseline** = trionet at `{meta['baseline_ref']}` ({base.commit}, {base.tree}); "
        f"**current** = trionet at {cur.commit} ({cur.tree}); the scripts of "
        f"{'each tree' if meta['baseline_scripts'] == 'own' else 'the current tree'}.",
        "",
        f"Run {meta['started']} → {meta['finished']} ({meta['seconds']:.0f} s) with "
        f"`{meta['command']}` on {meta['machine']}; load average (1 / 5 / 15 min) at the "
        f"start {meta['load_start']}, at the end {meta['load_end']}.",
        "",
        f"{meta['rounds']} rounds; each round runs every script once per side with "
        "`--rounds 1`, the two sides back to back (baseline first in odd rounds, current first "
        "in even ones). Per row and trionet contender: each side's median `[min–max]` over "
        "the rounds, and **current / baseline**, the median `[min–max]` of the per-round "
        "ratios, oriented so that **> 1 means the current tree is better** (for times, "
        "latencies and memory: baseline over current). Beyond noise: every round of one side "
        "beat every round of the other (the ranges do not overlap; `chance` is how likely "
        f"that is when nothing changed); fewer than {MIN_ROUNDS} rounds are too few to judge. "
        "A row that lost messages or records in any run of either side, or whose script "
        "failed, is **FAILED**.",
    ]
    if meta["quick"]:
        md += ["", "**This is a `--quick` run** (small counts): a check of the tool, not a "
               "measurement to quote."]
    md += ["", "## Summary", "",
           "| script | rows | within noise | **slower** | faster | too few rounds | failed "
           "| geometric mean of the median ratios | seconds baseline / current |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        mine = [e for e in entries if e["bench"] == name]
        count = {v: sum(1 for e in mine if e["verdict"] == v) for v in VERDICT_TEXT}
        secs = [sum(r.get("seconds", 0) for r in side.runs[name]) for side in sides]
        errors = sum(1 for side in sides for r in side.runs[name] if "error" in r)
        failed = count["failed"] + count["not measured on both sides"]
        failed_text = f"{failed}" + (f" ({errors} script runs failed)" if errors else "")
        md.append(f"| {name} | {len(mine)} | {count['within noise']} | {count['slower']} | "
                  f"{count['faster']} | {count['too few rounds']} | {failed_text} | "
                  f"{_geomean_text(mine)} | {secs[0]:.0f} / {secs[1]:.0f} |")
    beyond = [e for e in entries if e["verdict"] in ("slower", "faster")]
    if beyond:
        md += ["", "Beyond noise:", ""]
        md += [f"- {e['bench']}: {e['row']}, {e['contender']}: {_ratio_text(e)}, "
               f"{VERDICT_TEXT[e['verdict']]}" for e in beyond]
    for name in names:
        md += ["", f"## {name}", "",
               "| row | trionet contender | unit | baseline: median [min–max] | "
               "current: median [min–max] | current / baseline: median [min–max] | verdict |",
               "|---|---|---|---|---|---|---|"]
        for e in (e for e in entries if e["bench"] == name):
            row = e["row"] + (f" (= {'; '.join(e['same_as'])})" if e["same_as"] else "")
            md.append(f"| {_cell(row)} | {_cell(e['contender'])} | {e['unit']} | "
                      f"{_side_text(e['baseline'])} | {_side_text(e['current'])} | "
                      f"{_ratio_text(e)} | {_cell(_verdict_text(e))} |")
        for side in sides:
            for round_no, run in enumerate(side.runs[name], 1):
                if "error" in run:
                    md += ["", f"**{side.label}, round {round_no}: the script {run['error']}**."
                           " The end of its output:", "", "```text",
                           run.get("tail", "").strip(), "```"]
    path = out / "BEFORE_AFTER.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    data = {
        **{k: v for k, v in meta.items()},
        "sides": {s.label: {"commit": s.commit, "tree": str(s.tree),
                            "scripts": str(s.bench_dir)} for s in sides},
        "rows": entries,
        "script_errors": {s.label: {n: [r["error"] for r in s.runs[n] if "error" in r]
                                    for n in names} for s in sides},
    }
    (out / "BEFORE_AFTER.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def _extra_args(items: list[str], parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep:
            parser.error(f"--args takes NAME=ARGS, not {item!r}")
        extra.setdefault(name.strip(), []).extend(shlex.split(rest))
    return extra


def _load() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the git ref of the baseline trionet")
    parser.add_argument("--baseline-tree", default=None,
                        help="an existing checkout of the baseline to use (not created, not "
                             "removed)")
    parser.add_argument("--baseline-scripts", choices=("current", "own"), default="current",
                        help="run this tree's scripts on both sides (default) or each tree's "
                             "own")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (default 5)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", default=",".join(DEFAULT_SCRIPTS),
                        help="comma-separated scripts (default: %(default)s)")
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="more arguments for one script, e.g. channel='--duration 1' "
                             "(repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per run (default {DEFAULT_TIMEOUT:.0f}; "
                             f"{', '.join(f'{k}: {v:.0f}' for k, v in TIMEOUTS.items())})")
    parser.add_argument("--out", default=str(HERE / "report"), help="output directory")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse each run's saved output from an earlier run if present "
                             "(rebuilds the report without measuring again)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if not (HERE / f"{n}.py").exists()]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    extra = _extra_args(args.args, parser)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "baseline_ref": args.baseline, "baseline_scripts": args.baseline_scripts,
        "rounds": args.rounds, "quick": args.quick, "scripts": names,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_start": _load(),
        "command": "bench/compare.py " + shlex.join(sys.argv[1:]),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
    }
    t0 = time.monotonic()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trionet-cmp-")))
        base = stack.enter_context(baseline_tree(args.baseline, args.baseline_tree, scratch))
        sides = make_sides(base, args.baseline_scripts, scratch)
        for side in sides:
            print(f"{side.label}: trionet from {check_import(side)}", file=sys.stderr,
                  flush=True)
        for round_no in range(1, args.rounds + 1):
            order = sides if round_no % 2 else list(reversed(sides))
            for name in names:
                timeout = args.timeout or TIMEOUTS.get(name, DEFAULT_TIMEOUT)
                for side in order:
                    side.runs.setdefault(name, []).append(run_script(
                        side, name, args, extra.get(name, []), timeout, out, round_no))
    entries = [e for name in names
               for e in compare_rows(name, sides[0].runs[name], sides[1].runs[name])]
    meta.update(finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"), load_end=_load(),
                seconds=time.monotonic() - t0)
    report = write_report(entries, sides, names, out, meta)
    print(report)
    slower = [e for e in entries if e["verdict"] == "slower"]
    failed = [e for e in entries if e["verdict"] in ("failed", "not measured on both sides")]
    print(f"{len(entries)} rows: {len(slower)} slower beyond noise, {len(failed)} failed",
          file=sys.stderr)
    return 1 if failed or any("error" in r for s in sides for v in s.runs.values() for r in v) \
        else 0


if __name__ == "__main__":
    sys.exit(main())
