"""Run every benchmark and write a Markdown report with ratio tables and PNG plots.

Usage::

    .venv/bin/python bench/run_all.py [--quick] [--only framing,aproto] [--out bench/report]

Each ``bench/<name>.py`` prints, as its last line, the JSON object the harness writes
(``{"bench": ..., "rows": [...]}``). This script runs them one after another (never in
parallel: they would measure each other), collects those lines, and writes
``<out>/REPORT.md`` plus one ``<out>/<bench>.png`` bar chart of trionet's ratio against the
baseline per row, with the goal drawn where a row has one. A benchmark that fails is reported as
failed, with the tail of its output; the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "_harness.py"}


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.name not in SKIP
                  and not p.name.startswith("_"))


def parse_output(name: str, stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    result: dict[str, Any] | None = None
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"rows"' in line:
            result = json.loads(line)
            break
    if returncode != 0 or result is None:
        tail = (stdout + stderr)[-2000:]
        return {"bench": name, "error": f"exit {returncode}", "tail": tail}
    result["table"] = "\n".join(s for s in stdout.splitlines() if s.startswith("|"))
    return result


def run_one(name: str, quick: bool, timeout: float, out: Path, reuse: bool) -> dict[str, Any]:
    """Run bench/<name>.py (or reuse its saved output) and parse its JSON line.

    The raw output is saved as ``<out>/<name>.out`` as soon as the script ends, so that a
    failure later in the run loses nothing.
    """
    saved = out / f"{name}.out"
    if reuse and saved.exists():
        data = json.loads(saved.read_text())
        result = parse_output(name, data["stdout"], data["stderr"], data["returncode"])
        result["seconds"] = data["seconds"]
        return result
    cmd = [sys.executable, str(HERE / f"{name}.py")]
    if quick:
        cmd.append("--quick")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": f"timed out after {timeout:.0f} s"}
    elapsed = round(time.monotonic() - t0, 1)
    saved.write_text(json.dumps({"stdout": proc.stdout, "stderr": proc.stderr,
                                 "returncode": proc.returncode, "seconds": elapsed}))
    result = parse_output(name, proc.stdout, proc.stderr, proc.returncode)
    result["seconds"] = elapsed
    return result


def _headline(row: dict[str, Any]) -> tuple[str, float, float | None] | None:
    """The ratio to plot for a row: trionet's against the baseline, with its goal if any.

    Scripts report ratios as ``{name: value}``; some rows have several (against two peers),
    and the goal is a number or ``{name: goal}``.
    """
    ratios = row.get("ratios") or {}
    numeric = {k: v for k, v in ratios.items() if isinstance(v, int | float)}
    if not numeric:
        return None
    key = next((k for k in numeric if "trionet" in k), next(iter(numeric)))
    goal = row.get("goal")
    if isinstance(goal, dict):
        goal = goal.get(key)
    return key, float(numeric[key]), float(goal) if isinstance(goal, int | float) else None


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = [(r["row"], h) for r in result["rows"] if (h := _headline(r)) is not None]
    if not points:
        return False
    labels = [label for label, _ in points]
    values = [h[1] for _, h in points]
    goals = [h[2] for _, h in points]
    rows = points
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2), 4.2))
    colours = ["#c0392b" if g is not None and v < g else "#2e86c1"
               for v, g in zip(values, goals, strict=True)]
    ax.bar(range(len(rows)), values, color=colours)
    for i, goal in enumerate(goals):
        if goal is not None:
            ax.hlines(goal, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("trionet / baseline (median of rounds)")
    ax.set_title(f"{result['bench']}: ratio per row (dashed = goal)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _met(value: Any) -> bool:
    # A row's verdict: a bool, or one bool per contender (all must hold).
    if isinstance(value, dict):
        return all(bool(v) for v in value.values())
    return value is True


def write_report(results: list[dict[str, Any]], out: Path, quick: bool) -> Path:
    lines = [
        "# trionet benchmark report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `bench/run_all.py"
        f"{' --quick' if quick else ''}` on a shared 2-core machine: ratios are measured within "
        "one interleaved run of each script; absolute numbers are not comparable across runs.",
        "",
        "| bench | rows | goals met | seconds |",
        "|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['bench']} | failed: {r['error']} | | |")
            continue
        goals = [row for row in r["rows"] if row.get("met") is not None]
        met = sum(1 for row in goals if _met(row["met"]))
        lines.append(f"| {r['bench']} | {len(r['rows'])} | {met}/{len(goals)} | {r['seconds']} |")
    for r in results:
        lines += ["", f"## {r['bench']}", ""]
        if "error" in r:
            lines += ["Failed:", "", "```", r.get("tail", ""), "```"]
            continue
        lines.append(r["table"])
        if r.get("plot"):
            lines += ["", f"![{r['bench']} ratios]({r['plot']})"]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    write_rst(results, out, quick)
    return path


def write_rst(results: list[dict[str, Any]], out: Path, quick: bool) -> Path:
    """The same report as reStructuredText, for the Sphinx docs (``docs/benchmarks.rst``)."""
    lines = [
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by ``bench/run_all.py"
        f"{' --quick' if quick else ''}``.",
        "",
    ]
    for r in results:
        title = r["bench"]
        lines += [title, "-" * len(title), ""]
        if "error" in r:
            lines += [f"Failed: {r['error']}", ""]
            continue
        lines += [".. code-block:: text", ""]
        lines += ["   " + row for row in r["table"].splitlines()]
        lines.append("")
        if r.get("plot"):
            # Relative to docs/benchmarks.rst, which includes this file.
            lines += [f".. image:: ../bench/report/{r['plot']}", f"   :alt: {title} ratios", ""]
    path = out / "REPORT.rst"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out", default=str(HERE / "report"), help="output directory")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse each benchmark's saved output from an earlier run if present")
    args = parser.parse_args()
    names = discover()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        names = [n for n in names if n in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        print(f"running bench/{name}.py ...", file=sys.stderr, flush=True)
        result = run_one(name, args.quick, args.timeout, out, args.reuse)
        if "error" not in result and plot(result, out / f"{name}.png"):
            result["plot"] = f"{name}.png"
        results.append(result)
    report = write_report(results, out, args.quick)
    print(report)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
