"""Seeded fuzzing of every server decoder (nested containers, extension values, deep nesting,
random and mutated bytes, random splits), in a subprocess: a crash there is an exit status
here, not the end of the test run. Only documented errors may come out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("fuzz_decoders.py")


def test_decoders_raise_only_documented_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), "300"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=SCRIPT.parent,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.stdout.split() == [
        "codecs", "ok", "channel", "ok", "aproto", "ok", "framing", "ok", "envelope_fields", "ok",
        "envelopes", "ok",
    ]
