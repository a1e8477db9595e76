"""The error tree, the public exports, and the command line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trionet
from trionet import errors
from trionet.cli import main


def test_error_tree() -> None:
    assert issubclass(errors.ProtocolError, errors.TrionetError)
    for name in ("ASGIError", "MQTTError", "KafkaError", "MailError", "ChannelError",
                 "AProtoError", "FrameError", "CodecError"):
        assert issubclass(getattr(errors, name), errors.ProtocolError), name
    assert issubclass(errors.FrameTooLarge, errors.FrameError)
    assert issubclass(errors.IncompleteFrame, errors.FrameError)
    assert issubclass(errors.SMTPError, errors.MailError)
    assert issubclass(errors.IMAPError, errors.MailError)
    assert issubclass(errors.RemoteException, errors.ChannelError)
    closed = errors.ChannelClosed("gone")
    assert isinstance(closed, trio.BrokenResourceError)
    assert isinstance(closed, ConnectionResetError)
    assert issubclass(errors.MQTTTimeout, trio.TooSlowError)
    assert errors.MTAIOError is errors.TrionetError
    assert issubclass(errors.ConfigurationError, ValueError)


def test_errors_carry_their_values() -> None:
    exc = errors.FrameTooLarge(5000, 1024)
    assert (exc.size, exc.limit, exc.fault) == (5000, 1024, "remote")
    assert "5000" in str(exc)
    assert "1024" in str(exc)
    remote = errors.RemoteException("127.0.0.1:5555", "Traceback...\nValueError: x", "ValueError")
    assert remote.remote_type == "ValueError"
    assert "ValueError raised by 127.0.0.1:5555" in str(remote)
    assert errors.SMTPError("no", code=535).code == 535
    assert errors.MQTTConnectError("refused", reason_code=135).reason_code == 135
    assert errors.MQTTNotConnected().fault == "local"
    assert errors.AProtoError("bad", error_code="ERR_HEADER_INVALID").error_code == (
        "ERR_HEADER_INVALID"
    )


def test_public_names_are_exported() -> None:
    for name in trionet.__all__:
        assert hasattr(trionet, name), name
    for name in errors.__all__:
        assert hasattr(errors, name), name


def test_import_needs_only_core_dependencies() -> None:
    code = (
        "import sys, trionet, trionet.codecs, trionet.framing, trionet.errors, trionet.testing;"
        "bad = [m for m in ('hypercorn', 'paho', 'kafka', 'trustme', 'ziproto', 'asyncio')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"trionet {trionet.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: trionet" in capsys.readouterr().err


def test_demo_unknown_part(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--only", "nonsense"]) == 2
    assert "unknown demo part" in capsys.readouterr().err


def test_demo_runs_as_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trionet", "demo", "--only", "framing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "framed echo: sent ['ping', 42], got back ['ping', 42]" in proc.stdout
    assert "demo finished" in proc.stdout


# -- expected failures of the commands: one or two lines, no traceback, a meaningful status ------

_APPS = {
    "cli_ok_app.py": "from trionet.asgi import ASGIApplication\napp = ASGIApplication()\n",
    "cli_failing_app.py": (
        "from trionet.asgi import ASGIApplication\n"
        "app = ASGIApplication()\n\n"
        "@app.on_startup\n"
        "async def connect() -> None:\n"
        "    raise RuntimeError('database unreachable')\n"
    ),
    "cli_bus_app.py": (
        "from trionet.bus import BusMessage, BusSocket, DistributedApplication\n"
        "app = DistributedApplication()\n\n"
        "@app.application('orders/+')\n"
        "async def orders(message: BusMessage, socket: BusSocket) -> None:\n"
        "    pass\n"
    ),
}


@pytest.fixture
def cli_dir(tmp_path: Path) -> Path:
    for name, text in _APPS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _cli(cwd: Path, *args: str, debug_env: bool = False, python: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "TRIONET_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *sys.path])
    if debug_env:
        env["TRIONET_DEBUG"] = "1"
    command = [sys.executable, "-c", python, *args] if python else [
        sys.executable, "-m", "trionet", *args
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


_LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _assert_short(proc: Any, status: int, prefix: str, *fragments: str, lines: int = 2) -> None:
    err: str = proc.stderr
    assert proc.returncode == status, err
    assert "Traceback" not in err, err
    # Log records (the commands log as they go) aside, the failure takes one or two lines.
    report = [line for line in err.splitlines() if not _LOG_RECORD.match(line)]
    assert len(report) <= lines, err
    summary = [line for line in err.splitlines() if line.startswith(prefix + ": ")]
    assert len(summary) == 1, err
    for fragment in fragments:
        assert fragment in summary[0], err


@contextmanager
def _socket_on_a_port(listen: bool) -> Iterator[int]:
    """A loopback port that is in use (listening) or refuses connections (bound only)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        if listen:
            sock.listen()
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_serve_failures_are_one_line(cli_dir: Path) -> None:
    proc = _cli(cli_dir, "serve", "cli_ok_app:app", "--bind", "127.0.0.1:99999")
    _assert_short(proc, 2, "trionet serve", "invalid address '127.0.0.1:99999'", "0 to 65535")
    proc = _cli(cli_dir, "serve", "no_such_module_xyz:app")
    _assert_short(proc, 2, "trionet serve", "cannot import 'no_such_module_xyz'")
    proc = _cli(cli_dir, "serve", "cli_ok_app:nothing")
    _assert_short(proc, 2, "trionet serve", "has no attribute 'nothing'")
    with _socket_on_a_port(listen=True) as port:
        proc = _cli(cli_dir, "serve", "cli_ok_app:app", "--bind", f"127.0.0.1:{port}")
    _assert_short(
        proc, 1, "trionet serve", f"cannot listen on 127.0.0.1:{port}", "Address already in use"
    )
    # The startup hook's failure: logged on one line, reported on one line. (Hypercorn has
    # bound the socket by the time the failure reaches it, so "serving on" is printed too.)
    proc = _cli(cli_dir, "serve", "cli_failing_app:app", "--bind", "127.0.0.1:0")
    _assert_short(
        proc, 1, "trionet serve", "lifespan failed", "database unreachable", lines=3
    )


def test_debug_shows_the_traceback(cli_dir: Path) -> None:
    for proc in (
        _cli(cli_dir, "serve", "cli_failing_app:app", "--bind", "127.0.0.1:0", "--debug"),
        _cli(cli_dir, "--debug", "serve", "no_such_module_xyz:app"),
        _cli(cli_dir, "run", "cli_bus_app:app", "--broker", "mqtx://x", debug_env=True),
    ):
        assert proc.returncode in (1, 2), proc.stderr
        assert "Traceback (most recent call last)" in proc.stderr


def test_run_and_demo_broker_failures_are_one_line(cli_dir: Path) -> None:
    proc = _cli(cli_dir, "run", "cli_bus_app:app", "--broker", "mqtx://127.0.0.1:1883")
    _assert_short(proc, 2, "trionet run", "unsupported broker URL scheme 'mqtx'")
    proc = _cli(cli_dir, "run", "cli_bus_app:missing")
    _assert_short(proc, 2, "trionet run", "has no attribute 'missing'")
    proc = _cli(cli_dir, "demo", "--broker", "mqt://127.0.0.1:1883")
    _assert_short(proc, 2, "trionet demo", "unsupported broker URL scheme 'mqt'")
    with _socket_on_a_port(listen=False) as port:
        proc = _cli(cli_dir, "run", "cli_bus_app:app", "--broker", f"mqtt://127.0.0.1:{port}")
        _assert_short(proc, 1, "trionet run", f"cannot connect to 127.0.0.1:{port}", "refused")
        proc = _cli(cli_dir, "demo", "--broker", f"mqtt://127.0.0.1:{port}")
        _assert_short(proc, 1, "trionet demo", f"cannot connect to 127.0.0.1:{port}")


def test_demo_broker_part_without_broker_says_so(cli_dir: Path) -> None:
    for part, url in (("mqtt", "mqtt://127.0.0.1:1883"), ("kafka", "kafka://127.0.0.1:9092")):
        proc = _cli(cli_dir, "demo", "--only", part)
        _assert_short(proc, 2, "trionet demo", f"demo part {part!r} needs --broker", url)
    proc = _cli(cli_dir, "demo", "--only", "kafka", "--broker", "mqtt://127.0.0.1:1883")
    _assert_short(proc, 2, "trionet demo", "demo part 'kafka' needs --broker kafka://")
    proc = _cli(cli_dir, "demo", "--only", "nonsense")
    _assert_short(proc, 2, "trionet demo", "unknown demo part(s): nonsense", "mqtt, kafka")


def test_a_missing_extra_names_it(cli_dir: Path) -> None:
    # As if the extra were not installed: the import of its module fails.
    blocked = (
        "import sys; sys.modules[sys.argv[1]] = None; from trionet.cli import main; "
        "sys.exit(main(sys.argv[2:]))"
    )
    proc = _cli(cli_dir, "hypercorn", "serve", "cli_ok_app:app", "--bind", "127.0.0.1:0",
                python=blocked)
    _assert_short(proc, 1, "trionet serve", "'hypercorn' is not installed",
                  "pip install 'trionet[asgi]'")
    proc = _cli(cli_dir, "paho", "run", "cli_bus_app:app", "--broker", "mqtt://127.0.0.1:1883",
                python=blocked)
    _assert_short(proc, 1, "trionet run", "trionet.mqtt needs paho-mqtt", "'paho' is not installed",
                  "'trionet[mqtt]'")
    proc = _cli(cli_dir, "kafka", "run", "cli_bus_app:app", "--broker", "kafka://127.0.0.1:9092",
                python=blocked)
    _assert_short(proc, 1, "trionet run", "trionet.kafka needs kafka-python",
                  "pip install 'trionet[kafka]'")
    proc = _cli(cli_dir, "paho", "demo", "--only", "mqtt", "--broker", "mqtt://127.0.0.1:1883",
                python=blocked)
    _assert_short(proc, 1, "trionet demo", "trionet.mqtt needs paho-mqtt", "'trionet[mqtt]'")


@pytest.mark.parametrize(
    ("blocked", "package", "extra"),
    [("paho", "trionet.mqtt", "mqtt"), ("kafka", "trionet.kafka", "kafka")],
)
def test_an_optional_subpackage_names_its_extra(blocked: str, package: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {package}\n"
        "except ImportError as error:\n    print(type(error).__name__, error.name, error)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"pip install 'trionet[{extra}]'" in proc.stdout, proc.stdout


def test_serve_without_hypercorn_names_the_asgi_extra() -> None:
    """trionet.asgi.serve() called from a program (not the CLI) without hypercorn installed."""
    code = (
        "import sys; sys.modules['hypercorn'] = None\n"
        "import trio\n"
        "from trionet.asgi import ASGIApplication, serve\n"
        "try:\n    trio.run(serve, ASGIApplication(), '127.0.0.1:0')\n"
        "except ImportError as error:\n    print(type(error).__name__, error)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "trionet.asgi.serve() needs hypercorn" in proc.stdout, proc.stdout
    assert "pip install 'trionet[asgi]'" in proc.stdout, proc.stdout
