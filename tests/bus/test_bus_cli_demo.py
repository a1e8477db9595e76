"""``trionet run module:app --broker URL`` (in a subprocess, stopped by SIGTERM) and the demo."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from bus_support import PATIENCE, unique

from trionet.bus import DistributedApplication
from trionet.bus._cli import load_application, main
from trionet.demo._bus import demo
from trionet.errors import ConfigurationError
from trionet.testing import KafkaBroker, MosquittoServer

SERVICE = textwrap.dedent('''
    import sys

    import trio

    from trionet.bus import BusMessage, DistributedApplication

    app = DistributedApplication()  # the broker comes from --broker

    @app.application("cli/echo")
    async def echo(message, socket):
        await socket.reply(message, message.payload)

    @app.producer()
    async def ready(socket):
        reply = await socket.request(BusMessage(b"ready", "cli/echo"), timeout=10)
        print(reply.payload.decode(), flush=True)

    def factory():
        return app
''')


@pytest.fixture
def service(tmp_path: Path) -> Path:
    (tmp_path / "cli_service.py").write_text(SERVICE)
    return tmp_path


def run_cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "trionet.bus._cli", "run", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("target", ["cli_service:app", "cli_service:factory"])
def test_run_until_sigterm(service: Path, target: str) -> None:
    proc = run_cli(service, target, "--broker", f"memory://{unique()}", "--shutdown-timeout", "2")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=PATIENCE)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    assert "halted bus application 'echo'" in err


def test_usage_errors(service: Path) -> None:
    proc = run_cli(service, "cli_service:nothing")
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 2
    assert "has no attribute 'nothing'" in err


def test_load_application(service: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(service)
    monkeypatch.syspath_prepend(str(service))
    assert isinstance(load_application("cli_service:app"), DistributedApplication)
    for target, message in [("no-colon", "MODULE:ATTRIBUTE"), ("missing_module_xyz:app", "import"),
                            ("cli_service:sys", "not a DistributedApplication")]:
        with pytest.raises(ConfigurationError, match=message):
            load_application(target)
    with pytest.raises(SystemExit):
        main(["run"])


async def test_demo_on_memory() -> None:
    lines: list[str] = []
    with trio.fail_after(PATIENCE):
        await demo(lines.append)
    text = "\n".join(lines)
    assert text.count("consumer received") == 3
    assert "answered with b'HELLO BUS'" in text
    assert lines[-1] == "bus: every application shut down"


async def test_demo_on_real_brokers(shared_mosquitto: MosquittoServer,
                                    kafka_broker: KafkaBroker) -> None:
    urls = [f"mqtt://{shared_mosquitto.info.host}:{shared_mosquitto.info.port}",
            f"kafka://{kafka_broker.info.bootstrap_servers}?offset_reset=earliest"
            f"&group={unique()}&consumer.session_timeout_ms=6000"
            "&consumer.heartbeat_interval_ms=1000"]
    for url in urls:
        lines: list[str] = []
        with trio.fail_after(PATIENCE):
            await demo(lines.append, url)
        assert "answered with b'HELLO BUS'" in "\n".join(lines), url


def test_benchmark_script_runs_quickly() -> None:
    script = Path(__file__).resolve().parents[2] / "bench" / "bus.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--only", "memory", "--rounds", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"bench": "bus"' in proc.stdout.splitlines()[-1]
