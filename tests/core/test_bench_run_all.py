"""bench/run_all.py: it runs only benchmarks (not the compare tool), and its charts survive an
infinite spread (a round where trionet's memory growth was 0 gives peer/trionet = inf)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", ROOT / "bench" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_discover_lists_benchmarks_not_tools() -> None:
    names = _run_all().discover()
    assert "compare" not in names and "run_all" not in names
    assert {"framing", "channel", "bridges_memory"} <= set(names)


def test_a_chart_with_an_infinite_spread_is_drawn(tmp_path: Path) -> None:
    bars = [
        {"label": "RSS growth", "ratio": 458.5, "lo": 162.5, "hi": math.inf, "goal": None,
         "met": None, "failed": False},
        {"label": "buffered", "ratio": 375.3, "lo": 280.9, "hi": 421.6, "goal": 1.0,
         "met": True, "failed": False},
    ]
    assert _run_all().plot_bars(bars, "bridges", tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0
