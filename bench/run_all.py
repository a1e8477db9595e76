"""Run every benchmark and write the report: a headline table, each script's tables, charts.

Usage::

    .venv/bin/python bench/run_all.py [--quick] [--rounds N] [--only framing,aproto]
        [--timeout 1800] [--timeout-for channel=3600] [--out bench/report] [--reuse]
        [--docs-table docs/_generated/benchmarks_table.rst.inc]

Each ``bench/<name>.py`` prints tables and, as its last line, one JSON object
(``{"bench": ..., "rows": [...]}``). This script runs them one after another (never in
parallel: they would measure each other), each with a time limit (``--timeout``, default
1800 s; ``bench/channel.py`` takes about 15 minutes in full), passing ``--quick`` and
``--rounds`` through, and writes:

* ``<out>/REPORT.md``: the run's date, load averages and settings; the headline table
  "trionet against what you would use instead" (one line per component and peer, trionet's ratio
  with its spread, the goal and whether it was met: losses and misses included); a summary per
  script; then each script's own tables as it printed them;
* ``<out>/headline.png`` and ``<out>/<bench>.png``: trionet's ratio per row with the spread over
  rounds, the baseline named, goals drawn, misses in red, a log scale where the ratios span
  more than 5×;
* ``docs/_generated/benchmarks_table.rst.inc``: the same report as reStructuredText tables, which
  ``docs/benchmarks.rst`` includes.

Every ratio is oriented so that > 1 means trionet is better (for times, latencies and memory the
scripts divide the peer's value by trionet's). A script that fails or times out is reported as
failed with the tail of its output; the others still run. A row that lost messages says so.

To compare trionet with an older trionet instead of with its peers (before/after a change),
use ``bench/compare.py --baseline REF``, which reuses this script's output parsing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS_TABLE = ROOT / "docs" / "_generated" / "benchmarks_table.rst.inc"
"""Where the reStructuredText report goes (``--docs-table``); image paths in it are relative to
the directory above it (``docs/``), which is where ``docs/benchmarks.rst`` includes it from.
Not ``.rst``: Sphinx would build it as a page of its own, outside every toctree."""
DEFAULT_TIMEOUT = 1800.0
#: Scripts that need more than the default in full mode (seconds).
TIMEOUTS: dict[str, float] = {"channel": 2700.0}


@dataclass(frozen=True)
class Headline:
    """One line of the headline table: trionet against one peer users pick, in one script row."""

    component: str
    peer: str
    """What a user would run instead, in words."""
    bench: str
    row: str
    """The row's name, or a regular expression matching it (the first row that matches)."""
    key: str
    """The ratio's key in the row's ``ratios`` (``"trionet"`` or ``"trionet/aiokafka"``)."""
    measure: str


HEADLINES = (
    Headline("framing", "a struct + msgpack loop (reused Packer)", "framing", "decode 1KiB",
             "trionet", "decode 1 KiB frames/s"),
    Headline("framing", "a struct + msgpack loop (reused Packer)", "framing", "encode 1KiB",
             "trionet", "encode 1 KiB frames/s"),
    Headline("aproto", "a minimal raw trio server (bound)", "aproto", "seq json", "trionet",
             "sequential requests/s"),
    Headline("aproto", "a minimal raw trio server (bound)", "aproto", "pipe100 json", "trionet",
             "pipelined requests/s"),
    Headline("aproto", "the ziproto package", "aproto", "pipe100 ziproto vs package", "trionet",
             "pipelined requests/s"),
    Headline("asgi", "Starlette on uvicorn[standard]", "asgi", r"GET /hello: all servers",
             "trionet@trionet-worker", "GET req/s"),
    Headline("asgi", "Starlette on uvicorn[standard]", "asgi", r"POST /echo: all servers",
             "trionet@trionet-worker", "POST req/s"),
    Headline("asgi", "Starlette on uvicorn (h11)", "asgi", r"GET /hello: trionet vs Starlette",
             "trionet@trionet-worker", "GET req/s"),
    Headline("channel", "aiomas", "channel", "json seq ping", "trionet/aiomas",
             "sequential calls/s"),
    Headline("channel", "aiomas", "channel", "json pipe100 ping", "trionet/aiomas",
             "pipelined calls/s"),
    Headline("channel", "aiomas", "channel", "json conn20 ping", "trionet/aiomas",
             "calls/s, 20 connections"),
    Headline("mqtt", "paho-mqtt (its own loop thread)", "mqtt", "end-to-end QoS 1",
             "trionet/raw paho", "messages/s end to end"),
    Headline("mqtt", "aiomqtt", "mqtt", "end-to-end QoS 1", "trionet/aiomqtt",
             "messages/s end to end"),
    Headline("mqtt", "paho-mqtt (its own loop thread)", "mqtt", "latency QoS 1",
             "trionet/raw paho", "p50 latency"),
    Headline("kafka", "aiokafka", "kafka", "produce 100 B, acks=1",
             "trionet send_nowait/aiokafka", "produce records/s"),
    Headline("kafka", "confluent-kafka", "kafka", "produce 100 B, acks=1",
             "trionet send_nowait/confluent-kafka", "produce records/s"),
    Headline("kafka", "aiokafka", "kafka", "consume 100 B", "trionet async for/aiokafka",
             "consume records/s"),
    Headline("kafka", "confluent-kafka", "kafka", "consume 100 B",
             "trionet async for/confluent-kafka", "consume records/s"),
    Headline("mail", "smtplib", "mail", r"send \d+ small$", "trionet", "send time"),
    Headline("mail", "imaplib, one batched UID FETCH", "mail", r"fetch \d+$", "trionet",
             "fetch + parse time"),
    Headline("bus", "FastStream (MQTTBroker)", "bus", "mqtt produce→consume",
             "trionet bus/FastStream", "messages/s"),
    Headline("bus", "FastStream (MQTTBroker)", "bus", "mqtt request/response",
             "trionet bus/FastStream", "round trips/s"),
    Headline("bus", "FastStream (KafkaBroker)", "bus", "kafka produce→consume",
             "trionet bus/FastStream", "messages/s"),
)


# -- running the scripts ------------------------------------------------------------------------


#: Scripts in bench/ that are tools, not benchmarks (compare.py needs --baseline).
_TOOLS = frozenset({"run_all.py", "compare.py"})


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py")
                  if p.name not in _TOOLS and not p.name.startswith("_"))


def parse_output(name: str, stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    result: dict[str, Any] | None = None
    lines = stdout.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if line.startswith("{") and '"rows"' in line:
            result = json.loads(line)
            lines = lines[:index]
            break
    if returncode != 0 or result is None:
        tail = (stdout + stderr)[-2000:]
        return {"bench": name, "error": f"exit {returncode}", "tail": tail}
    result["output"] = "\n".join(lines).strip("\n")
    return result


def run_one(name: str, args: argparse.Namespace, timeout: float, out: Path) -> dict[str, Any]:
    """Run bench/<name>.py (or reuse its saved output) and parse its JSON line.

    The raw output is saved as ``<out>/<name>.out`` as soon as the script ends, so that a
    failure later in the run loses nothing.
    """
    cmd = [sys.executable, str(HERE / f"{name}.py")]
    if args.quick:
        cmd.append("--quick")
    if args.rounds is not None:
        cmd += ["--rounds", str(args.rounds)]
    return run_saved(name, cmd, out / f"{name}.out", reuse=args.reuse, timeout=timeout,
                     cwd=ROOT)


def run_saved(name: str, cmd: list[str], saved: Path, *, reuse: bool, timeout: float,
              cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one script's ``cmd`` with a time limit and parse its output (``parse_output``),
    with ``"seconds"`` added; the output is saved in ``saved`` as soon as it ends, and read
    back from there instead of running when ``reuse`` is set and it exists."""
    if reuse and saved.exists():
        data = json.loads(saved.read_text())
        result = parse_output(name, data["stdout"], data["stderr"], data["returncode"])
        result["seconds"] = data["seconds"]
        return result
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        tail = ((exc.stdout or b"") + (exc.stderr or b""))
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else str(tail)
        return {"bench": name, "error": f"timed out after {timeout:.0f} s",
                "tail": text[-2000:], "seconds": round(time.monotonic() - t0, 1)}
    elapsed = round(time.monotonic() - t0, 1)
    saved.write_text(json.dumps({"cmd": cmd, "stdout": proc.stdout, "stderr": proc.stderr,
                                 "returncode": proc.returncode, "seconds": elapsed}))
    result = parse_output(name, proc.stdout, proc.stderr, proc.returncode)
    result["seconds"] = elapsed
    return result


# -- reading the scripts' rows (both JSON shapes) -----------------------------------------------


def _split_key(key: str, row: dict[str, Any]) -> tuple[str, str]:
    """(contender, baseline) of a ratio key: ``"a/b"``, or ``"a"`` against the row's baseline."""
    if "/" in key:
        contender, _, baseline = key.rpartition("/")
        return contender, baseline
    return key, str(row.get("baseline") or "baseline")


def goals_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of a row as ``{key, contender, baseline, goal, ratio, ratio_min, ratio_max,
    met}`` (or ``{key: "limit", limit, value, met}``).

    Reads the harness's ``goals`` list, and the older shapes the scripts with their own tables
    write: ``goal`` a number (judged on the row's last ratio) or ``{ratio key: goal}``, ``met``
    a bool (for the whole row) or ``{ratio key or contender: bool}``; where one verdict covers
    several goals, each goal is judged from its median ratio. A row that failed (lost
    messages) misses every goal.
    """
    if isinstance(row.get("goals"), list):
        return list(row["goals"])
    ratios = row.get("ratios") or {}
    goal = row.get("goal")
    met = row.get("met")
    failed = failure_of(row) is not None
    if isinstance(goal, int | float) and ratios:
        goal = {list(ratios)[-1]: goal}
    entries: list[dict[str, Any]] = []
    for key, minimum in (goal or {}).items() if isinstance(goal, dict) else ():
        ratio = ratios.get(key)
        contender, baseline = _split_key(key, row)
        by_ratio = ratio is not None and ratio >= minimum
        if isinstance(met, dict) and key in met:
            verdict = bool(met[key])
        elif isinstance(met, dict) and contender in met:
            # one verdict per contender (mqtt): true only if all its goals were met
            verdict = bool(met[contender]) or by_ratio
        else:  # one verdict for the row (channel): the goals were judged together
            verdict = met is True or by_ratio
        entries.append({
            "key": key, "contender": contender, "baseline": baseline, "goal": minimum,
            "ratio": ratio, "ratio_min": (row.get("ratio_min") or {}).get(key),
            "ratio_max": (row.get("ratio_max") or {}).get(key),
            "met": verdict and not failed,
        })
    if row.get("limit") is not None:
        verdict = met.get("limit") if isinstance(met, dict) else met
        entries.append({"key": "limit", "limit": row["limit"], "unit": row.get("unit", ""),
                        "met": bool(verdict) and not failed})
    return entries


def failure_of(row: dict[str, Any]) -> str | None:
    """Why a row measured nothing comparable (lost messages or records, or a failure), if so."""
    if row.get("failed"):
        return str(row["failed"])
    for field in ("lost_messages", "lost_records"):
        lost = row.get(field)
        if not lost:
            continue
        counts = {name: sum(v) if isinstance(v, list) else v for name, v in lost.items()}
        counts = {name: n for name, n in counts.items() if n}
        if counts:
            what = "messages" if field == "lost_messages" else "records"
            return f"lost {what}: " + ", ".join(f"{name} {n:,}" for name, n in counts.items())
    return None


def _verdict(entries: list[dict[str, Any]], failure: str | None) -> str:
    if failure:
        return f"**FAILED** ({failure})"
    if not entries:
        return "no goal"
    missed = [e for e in entries if not e["met"]]
    if not missed:
        return "met"
    return "**MISSED**" if len(entries) == 1 else f"**MISSED** {len(missed)} of {len(entries)}"


def _ratio_text(median: float | None, lo: float | None, hi: float | None) -> str:
    if median is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{median:.2f}×"
    return f"{median:.2f}× [{lo:.2f}–{hi:.2f}]"


def _find_row(results: dict[str, dict[str, Any]], spec: Headline) -> dict[str, Any] | None:
    result = results.get(spec.bench)
    if result is None or "error" in result:
        return None
    for row in result["rows"]:
        if row["row"] == spec.row or re.match(spec.row, row["row"]):
            return row
    return None


def headline_lines(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline table's lines, one per ``HEADLINES`` entry whose script ran."""
    by_bench = {r["bench"]: r for r in results}
    lines = []
    for spec in HEADLINES:
        if spec.bench not in by_bench:
            continue  # not run (--only)
        line: dict[str, Any] = {"spec": spec, "ratio": None, "lo": None, "hi": None,
                                "goal": None, "verdict": ""}
        result = by_bench[spec.bench]
        row = _find_row(by_bench, spec)
        if "error" in result:
            line["verdict"] = f"**FAILED**: the script {result['error']}"
        elif row is None or spec.key not in (row.get("ratios") or {}):
            line["verdict"] = "not measured in this run"
        else:
            line["row"] = row["row"]
            line["ratio"] = row["ratios"][spec.key]
            line["lo"] = (row.get("ratio_min") or {}).get(spec.key)
            line["hi"] = (row.get("ratio_max") or {}).get(spec.key)
            entries = [e for e in goals_of(row) if e["key"] == spec.key]
            failure = failure_of(row)
            if entries:
                line["goal"] = entries[0]["goal"]
            line["verdict"] = _verdict(entries, failure)
            if not entries and not failure:
                line["verdict"] = "no goal (shown)" if line["ratio"] >= 1 else "no goal: a loss"
        lines.append(line)
    return lines


# -- charts -------------------------------------------------------------------------------------


def _bars_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What a script's chart shows: each goal's ratio, or trionet's against the row's baseline.

    One bar per goal of a row (so a row judged against two peers has two bars), else one bar:
    the last ``trionet`` ratio against the row's baseline.
    """
    bars = []
    for row in result["rows"]:
        ratios = row.get("ratios") or {}
        failure = failure_of(row)
        entries = [e for e in goals_of(row) if e["key"] != "limit" and e.get("ratio") is not None]
        limit = next((e for e in goals_of(row) if e["key"] == "limit"), None)
        note = ""
        if not entries:
            plain = [k for k in ratios if "/" not in k] or list(ratios)
            trionets = [k for k in plain if k.startswith("trionet")] or plain
            if not trionets:
                continue
            key = trionets[-1]
            contender, baseline = _split_key(key, row)
            entries = [{"key": key, "contender": contender, "baseline": baseline, "goal": None,
                        "ratio": ratios[key], "met": None if limit is None else limit["met"]}]
        if limit is not None:  # an absolute bound, not a ratio: said in the label
            note = (f" (limit ≤ {limit['limit']:g} {limit.get('unit', '')}: "
                    f"{'met' if limit['met'] else 'MISSED'})")
        for e in entries:
            key = e["key"]
            bars.append({
                "label": f"{row['row']}{note}\nvs {e['baseline']}",
                "ratio": float(e["ratio"]),
                "lo": (row.get("ratio_min") or {}).get(key),
                "hi": (row.get("ratio_max") or {}).get(key),
                "goal": e.get("goal"),
                "met": (e["met"] if e.get("goal") is None
                        else bool(e["met"]) and not failure),
                "failed": failure is not None,
            })
    return bars


def plot_bars(bars: list[dict[str, Any]], title: str, path: Path) -> bool:
    """A horizontal bar chart of ratios (> 1: trionet better) with spreads, goals and misses."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    bars = [b for b in bars if b["ratio"] > 0 and math.isfinite(b["ratio"])]
    if not bars:
        return False
    values = [b["ratio"] for b in bars]
    # a spread may be infinite (a round where trionet's value was 0, e.g. no memory growth)
    spread_values = values + [v for b in bars for v in (b["lo"], b["hi"], b["goal"])
                              if v and math.isfinite(v) and v > 0]
    log = max(spread_values) / min(spread_values) > 5
    colours = {True: "#2e86c1", False: "#c0392b", None: "#95a5a6"}
    height = max(3.2, 0.42 * len(bars) + 2.0)
    fig, ax = plt.subplots(figsize=(9.0, height))
    ys = list(range(len(bars)))[::-1]
    for y, b in zip(ys, bars, strict=True):
        colour = colours[False] if b["failed"] else colours[b["met"]]
        ax.barh(y, b["ratio"], color=colour, hatch="//" if b["failed"] else None,
                left=0 if not log else None)
        if b["lo"] is not None and b["hi"] is not None:
            high = b["hi"] if math.isfinite(b["hi"]) else max(spread_values) * 3
            ax.plot([b["lo"], high], [y, y], color="black", linewidth=1.2)
        if b["goal"] is not None:
            ax.plot([b["goal"], b["goal"]], [y - 0.42, y + 0.42], color="black",
                    linestyle="--", linewidth=1.5)
        note = f" {b['ratio']:.2f}×"
        if b["failed"]:
            note += " FAILED"
        elif b["met"] is False:
            note += " MISSED"
        right = max(v for v in (b["ratio"], b["hi"], b["goal"])
                    if v is not None and math.isfinite(v))
        ax.annotate(note, (right, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.axvline(1.0, color="grey", linewidth=0.8)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(spread_values) / 1.5, max(spread_values) * 3)
    else:
        ax.set_xlim(0, max(spread_values) * 1.3)
    ax.set_yticks(ys)
    ax.set_yticklabels([b["label"] for b in bars], fontsize=7)
    ax.set_xlabel("trionet / baseline: median of the per-round ratios, line: min–max"
                  f"{' (log scale)' if log else ''}; > 1: trionet better", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.legend(handles=[
        Patch(color=colours[True], label="goal met"),
        Patch(color=colours[False], label="goal missed / row failed"),
        Patch(color=colours[None], label="no goal"),
        plt.Line2D([], [], color="black", linestyle="--", label="goal"),
    ], fontsize=7, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_headline(lines: list[dict[str, Any]], path: Path) -> bool:
    bars = [{
        "label": f"{line['spec'].component}: {line['spec'].measure}\nvs {line['spec'].peer}",
        "ratio": line["ratio"], "lo": line["lo"], "hi": line["hi"], "goal": line["goal"],
        "met": None if line["goal"] is None else line["verdict"] == "met",
        "failed": line["verdict"].startswith("**FAILED"),
    } for line in lines if line["ratio"] is not None]
    return plot_bars(bars, "trionet against what you would use instead", path)


# -- the report ---------------------------------------------------------------------------------


def _load_text(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{v:.2f}" for v in load)


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _blocks(output: str) -> list[tuple[str, list[str]]]:
    """A script's printed output as ("table" | "heading" | "text", lines) blocks."""
    blocks: list[tuple[str, list[str]]] = []
    for line in output.splitlines():
        kind = ("table" if line.startswith("|") else "heading" if line.startswith("## ")
                else "text")
        if kind == "text" and not line.strip():
            kind = "blank"
        if blocks and blocks[-1][0] == kind and kind in ("table", "text"):
            blocks[-1][1].append(line)
        elif kind != "blank":
            blocks.append((kind, [line]))
        elif blocks and blocks[-1][0] == "text":
            blocks.append(("blank", [line]))
    return [(k, v) for k, v in blocks if k != "blank"]


def _summary(result: dict[str, Any]) -> tuple[str, str, str]:
    """(rows, goals met, failed rows) of a script, for the summary table."""
    rows = result["rows"]
    entries = [e for row in rows for e in goals_of(row)]
    met = sum(1 for e in entries if e["met"])
    failed = [f"{row['row']}: {failure}" for row in rows if (failure := failure_of(row))]
    goals = f"{met}/{len(entries)}" if entries else "no goal"
    if entries and met < len(entries):
        goals += f" (**{len(entries) - met} missed**)"
    return str(len(rows)), goals, "; ".join(failed) or "none"


def write_report(results: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> Path:
    lines = headline_lines(results)
    if plot_headline(lines, out / "headline.png"):
        meta["headline_plot"] = "headline.png"
    md = [
        "# trionet benchmark report",
        "",
        f"Run {meta['started']} → {meta['finished']} ({meta['seconds']:.0f} s) with "
        f"`{meta['command']}` on {meta['machine']}. 1-minute / 5-minute / 15-minute load "
        f"average at the start: {_load_text(meta['load_start'])}; at the end: "
        f"{_load_text(meta['load_end'])}.",
        "",
        "Ratios are trionet / the peer, measured within one interleaved run of each script "
        "(median of the per-round ratios, `[min–max]` over the rounds), oriented so that "
        "**> 1 means trionet is better** (for times, latencies and memory: the peer's value "
        "over trionet's). Absolute numbers are not comparable across runs of this shared "
        "machine; ratios are.",
    ]
    if meta["quick"]:
        md += ["", "**This is a `--quick` run** (small counts, few rounds): a check of the "
               "scripts, not a measurement to quote."]
    md += ["", "## trionet against what you would use instead", "",
           "| component | what you would use instead | measure | trionet / it | goal | verdict |",
           "|---|---|---|---|---|---|"]
    for line in lines:
        spec = line["spec"]
        goal = "" if line["goal"] is None else f"≥ {line['goal']:g}×"
        md.append(f"| {spec.component} | {_md_cell(spec.peer)} | {_md_cell(spec.measure)} | "
                  f"{_ratio_text(line['ratio'], line['lo'], line['hi'])} | {goal} | "
                  f"{_md_cell(line['verdict'])} |")
    if meta.get("headline_plot"):
        md += ["", f"![trionet against what you would use instead]({meta['headline_plot']})"]
    md += ["", "## Per script", "",
           "| script | rows | goals met | rows that failed | seconds |", "|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            md.append(f"| {r['bench']} | **FAILED**: {r['error']} | | | {r.get('seconds', '')} |")
            continue
        rows, goals, failed = _summary(r)
        md.append(f"| {r['bench']} | {rows} | {goals} | {_md_cell(failed)} | {r['seconds']} |")
    for r in results:
        md += ["", f"## {r['bench']}", ""]
        if "error" in r:
            md += [f"**FAILED**: {r['error']}. The end of its output:", "", "```text",
                   r.get("tail", "").strip(), "```"]
            continue
        for kind, block in _blocks(r["output"]):
            if kind == "heading":
                md += [f"###{block[0][2:]}", ""]
            elif kind == "table":
                md += [*block, ""]
            else:
                md += ["```text", *block, "```", ""]
        if r.get("plot"):
            md += [f"![{r['bench']}: trionet / baseline per row]({r['plot']})"]
    path = out / "REPORT.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    write_rst(results, lines, out, meta)
    return path


def _rst_text(text: str) -> str:
    """Markdown cell text as reStructuredText: ``**bold**`` stays, a lone ``*`` is escaped,
    backticks become literals, a trailing ``_`` is escaped (else it is a reference)."""
    text = re.sub(r"`([^`]+)`", r"``\1``", text)
    text = re.sub(r"(?<!\*)\*(?!\*)", r"\\*", text)
    return re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)


def _list_table(header: list[str], rows: list[list[str]], widths: list[int] | None = None
                ) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append(f"   :widths: {' '.join(str(w) for w in widths)}")
    out.append("")
    for cells in [header, *rows]:
        cells = cells + [""] * (len(header) - len(cells))
        for i, cell in enumerate(cells[:len(header)]):
            text = _rst_text(cell.strip()) or " "
            out.append(f"   {'* -' if i == 0 else '  -'} {text}")
    out.append("")
    return out


def _md_table_rows(block: list[str]) -> tuple[list[str], list[list[str]]]:
    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|")
                for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
    rows = [cells(line) for line in block if not re.match(r"^\|[\s:|-]+\|$", line.strip())]
    return rows[0], rows[1:]


def _title(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def write_rst(results: list[dict[str, Any]], lines: list[dict[str, Any]], out: Path,
              meta: dict[str, Any]) -> Path:
    """The report as reStructuredText tables, for ``docs/benchmarks.rst`` to include."""
    target: Path = meta["docs_table"]
    image_dir = os.path.relpath(out.resolve(), target.resolve().parent.parent)
    rst = [
        ".. This file is generated by bench/run_all.py; do not edit.",
        "",
        f"Run {meta['started']} → {meta['finished']} ({meta['seconds']:.0f} s) with "
        f"``{meta['command']}`` on {meta['machine']}. Load average (1 / 5 / 15 min) at the "
        f"start: {_load_text(meta['load_start'])}; at the end: {_load_text(meta['load_end'])}.",
        "",
    ]
    if meta["quick"]:
        rst += ["**This is a** ``--quick`` **run** (small counts, few rounds): a check of the "
                "scripts, not a measurement to quote.", ""]
    rst += _title("trionet against what you would use instead", "-")
    rst += ["Ratios: trionet / the peer, median of the per-round ratios with ``[min–max]`` over "
            "the rounds; **> 1 means trionet is better**.", ""]
    rst += _list_table(
        ["component", "what you would use instead", "measure", "trionet / it", "goal",
         "verdict"],
        [[line["spec"].component, line["spec"].peer, line["spec"].measure,
          _ratio_text(line["ratio"], line["lo"], line["hi"]),
          "" if line["goal"] is None else f"≥ {line['goal']:g}×", line["verdict"]]
         for line in lines],
        [10, 22, 18, 18, 8, 24],
    )
    if meta.get("headline_plot"):
        rst += [f".. image:: {image_dir}/{meta['headline_plot']}",
                "   :alt: trionet against what you would use instead", ""]
    rst += _title("Per script", "-")
    summary = []
    for r in results:
        if "error" in r:
            summary.append([r["bench"], f"**FAILED**: {r['error']}", "", "",
                            str(r.get("seconds", ""))])
        else:
            summary.append([r["bench"], *_summary(r), str(r["seconds"])])
    rst += _list_table(["script", "rows", "goals met", "rows that failed", "seconds"], summary)
    for r in results:
        rst += _title(r["bench"], "~")
        if "error" in r:
            rst += [f"**FAILED**: {r['error']}. The end of its output:", "",
                    ".. code-block:: text", ""]
            rst += ["   " + s for s in (r.get("tail", "").strip() or "(none)").splitlines()]
            rst.append("")
            continue
        for kind, block in _blocks(r["output"]):
            if kind == "heading":
                rst += [_rst_text(block[0][3:]), ""]
            elif kind == "table":
                header, rows = _md_table_rows(block)
                rst += _list_table(header, rows)
            else:
                rst += [".. code-block:: text", ""] + ["   " + s for s in block] + [""]
        if r.get("plot"):
            rst += [f".. image:: {image_dir}/{r['plot']}",
                    f"   :alt: {r['bench']}: trionet / baseline per row", ""]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(rst).rstrip("\n") + "\n")
    return target


def _timeouts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, float]:
    """The ``--timeout-for NAME=SECONDS`` limits."""
    timeouts = {}
    for item in args.timeout_for:
        name, _, seconds = item.partition("=")
        try:
            timeouts[name.strip()] = float(seconds)
        except ValueError:
            parser.error(f"--timeout-for takes NAME=SECONDS, not {item!r}")
    return timeouts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--rounds", type=int, default=None,
                        help="pass --rounds N to every benchmark (default: each script's own)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out", default=str(HERE / "report"), help="output directory")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per benchmark (default {DEFAULT_TIMEOUT:.0f}; "
                             f"{', '.join(f'{k}: {v:.0f}' for k, v in TIMEOUTS.items())})")
    parser.add_argument("--timeout-for", action="append", default=[], metavar="NAME=SECONDS",
                        help="the time limit of one benchmark (repeatable)")
    parser.add_argument("--docs-table", default=str(DOCS_TABLE),
                        help="where to write the reStructuredText report for the docs")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse each benchmark's saved output from an earlier run if present")
    args = parser.parse_args()
    timeouts = _timeouts(args, parser)
    names = discover()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        names = [n for n in names if n in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_start": _loadavg(),
        "quick": args.quick,
        "docs_table": Path(args.docs_table),
        "command": "bench/run_all.py " + shlex.join(sys.argv[1:]) if sys.argv[1:]
        else "bench/run_all.py",
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
    }
    t0 = time.monotonic()
    results = []
    for name in names:
        timeout = timeouts.get(name) or args.timeout or TIMEOUTS.get(name, DEFAULT_TIMEOUT)
        print(f"running bench/{name}.py (limit {timeout:.0f} s) ...", file=sys.stderr,
              flush=True)
        result = run_one(name, args, timeout, out)
        if "error" not in result and plot_bars(
                _bars_of(result), f"{name}: trionet / baseline per row (> 1: trionet better)",
                out / f"{name}.png"):
            result["plot"] = f"{name}.png"
        results.append(result)
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["load_end"] = _loadavg()
    meta["seconds"] = time.monotonic() - t0
    report = write_report(results, out, meta)
    print(report)
    print(meta["docs_table"])
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
