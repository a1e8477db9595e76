"""The error tree, the public exports, and the command line."""

from __future__ import annotations

import subprocess
import sys

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
