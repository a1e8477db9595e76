"""trionet installs from a checkout: a wheel builds offline and holds the whole package.

The README and the overview page tell users to ``pip install .`` (or ``'.[all]'``) from a
checkout, since trionet is not on a package index. This builds the wheel pip would build for
that, without build isolation (so nothing is downloaded: the ``test`` extra brings a setuptools
recent enough for the ``[build-system]`` table), installs it into a scratch directory and
imports it from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "trionet"


def _subpackages() -> set[str]:
    return {
        str(init.parent.relative_to(ROOT)).replace(os.sep, "/")
        for init in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_a_wheel_builds_offline_and_installs(tmp_path: Path) -> None:
    # Build from a copy of what the wheel is made of, so the checkout gets no build/ or
    # *.egg-info directory (other people work in it).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "trionet", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "--quiet", "-w", wheels, source, cwd=tmp_path,
    )
    (wheel,) = wheels.glob("trionet-*-py3-none-any.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "trionet/py.typed" in names
    subpackages = _subpackages()
    assert {"trionet/asgi", "trionet/mqtt", "trionet/kafka", "trionet/testing"} <= subpackages
    missing = sorted(p for p in subpackages if f"{p}/__init__.py" not in names)
    assert not missing, f"subpackages missing from the wheel: {missing}"
    sources = {
        str(p.relative_to(ROOT)).replace(os.sep, "/")
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert sorted(sources - names) == []
    # Only trionet: no tests, benchmarks or docs in the wheel.
    assert {n.split("/")[0] for n in names} == {"trionet", dist_info}
    assert "trionet = trionet.cli:main" in entry_points
    assert "trionet = trionet.testing._plugin" in entry_points
    for extra in ("asgi", "mqtt", "kafka", "ziproto", "all", "docs", "test"):
        assert f"Provides-Extra: {extra}\n" in metadata

    # Install it (what `pip install .` does after the build) and import from the install.
    target = tmp_path / "site"
    _run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
        "--target", target, wheel, cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    # (cwd is the scratch directory: from the checkout, `-c` would import the source tree.)
    out = _run(
        sys.executable, "-c",
        "import trionet, trionet.asgi, trionet.bus, trionet.testing; print(trionet.__file__)",
        cwd=tmp_path, env=env,
    )
    assert Path(out.strip()).is_relative_to(target)
    assert "usage: trionet" in _run(
        sys.executable, "-m", "trionet", "--help", cwd=tmp_path, env=env
    )
