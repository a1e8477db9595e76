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
