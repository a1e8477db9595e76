"""bench/compare.py runs one tiny round of bench/framing.py against HEAD and this tree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT / "bench" / "compare.py"


def test_before_after_report_has_both_sides_and_ratios(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(COMPARE), "--baseline", "HEAD", "--only", "framing",
         "--rounds", "1", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # Each side imported trionet from its own tree, checked before measuring.
    assert f"current: trionet from {ROOT / 'trionet'}" in done.stderr
    assert "baseline: trionet from " in done.stderr
    report = (tmp_path / "BEFORE_AFTER.md").read_text()
    assert "**baseline** = trionet at `HEAD`" in report
    assert "**current** = trionet at" in report
    assert "| row | trionet contender | unit | baseline: median [min–max] | current: median" \
        in report
    data = json.loads((tmp_path / "BEFORE_AFTER.json").read_text())
    assert set(data["sides"]) == {"baseline", "current"}
    assert data["sides"]["baseline"]["tree"] != data["sides"]["current"]["tree"]
    rows = data["rows"]
    assert {r["row"] for r in rows} >= {"decode 1KiB", "encode 1KiB"}
    for row in rows:
        assert row["bench"] == "framing"
        assert row["contender"] == "trionet"
        assert len(row["values"]["baseline"]) == len(row["values"]["current"]) == 1
        assert row["ratio_values"] == [row["ratio"]]
        assert row["ratio"] > 0
        assert row["verdict"] == "too few rounds"  # one round judges nothing
        assert f"| {row['row']} | trionet | ops/s |" in report
        assert f"{row['ratio']:.3f}×" in report
    # Each run's raw output is kept, one file per script, side and round.
    assert sorted(p.name for p in tmp_path.glob("before_after.*.out")) == [
        "before_after.framing.baseline.1.out", "before_after.framing.current.1.out"]
    # The worktree of HEAD the run made, if it made one (else it reused a clean detached
    # one), is gone from the repository and from the disk.
    made = re.search(r"git worktree add --detach (\S+)", done.stderr)
    if made:
        listing = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
        assert made.group(1) not in listing
        assert not Path(made.group(1)).exists()
    else:
        assert "reusing the worktree" in done.stderr


def _runs(values: list[float], unit: str = "ops/s", lost: int = 0) -> list[dict[str, object]]:
    """One script's parsed output per round, one row with one trionet contender and a peer."""
    return [{"bench": "x", "rows": [{
        "row": "r", "unit": unit, "medians": {"peer": 1.0, "trionet": v},
        "values": {"peer": [1.0], "trionet": [v]}, "lost_messages": {"trionet": [lost]},
    }]} for v in values]


def test_verdicts_from_the_rounds_spread() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import compare
    finally:
        sys.path.remove(str(ROOT / "bench"))
    base = [100.0, 104.0, 98.0, 101.0, 103.0]
    (slower,) = compare.compare_rows("x", _runs(base), _runs([90.0, 95.0, 91.0, 97.0, 92.0]))
    assert slower["contender"] == "trionet"  # the peer is not compared
    assert slower["verdict"] == "slower"
    assert slower["chance"] == 2 / 252
    assert slower["ratio_values"] == [0.9, 95 / 104, 91 / 98, 97 / 101, 92 / 103]
    (overlap,) = compare.compare_rows("x", _runs(base), _runs([99.0, 95.0, 91.0, 97.0, 92.0]))
    assert overlap["verdict"] == "within noise"
    # Lower is better for times: the ratio is baseline / current, > 1 when current is faster.
    (faster,) = compare.compare_rows("x", _runs(base, "ms"), _runs([90.0] * 5, "ms"))
    assert faster["verdict"] == "faster"
    assert faster["ratio"] == 101 / 90  # the medians: 101 and 90
    (few,) = compare.compare_rows("x", _runs(base[:3]), _runs([50.0] * 3))
    assert few["verdict"] == "too few rounds"
    # A lost message in any run of either side fails the row, whatever the ratio.
    (lost,) = compare.compare_rows("x", _runs(base), _runs(base[:4]) + _runs([100.0], lost=3))
    assert lost["verdict"] == "failed"
    assert "current: lost messages: trionet 3" in lost["failed"]
    failed_run = [{"bench": "x", "error": "exit 1", "tail": "boom"}]
    (error,) = compare.compare_rows("x", _runs(base[:4]) + failed_run, _runs(base))
    assert error["verdict"] == "failed"
    assert "baseline: the script exit 1" in error["failed"]
