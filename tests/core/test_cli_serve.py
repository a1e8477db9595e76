"""``trionet serve``'s options, each in a subprocess: module paths and ``--factory``, the
access log and ``--log-level``, ``--graceful-timeout``, ``--worker``, HTTPS with
``--certfile/--keyfile`` and client certificates with ``--ca-certs``, ``--workers`` and
``--reload``."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from cli_helpers import PATIENCE, Command, start_command

WEB_APP = textwrap.dedent('''
    import os

    import trio

    from trionet.asgi import ASGIApplication, Request, Response

    app = ASGIApplication()


    @app.route("/")
    async def index(request: Request) -> Response:
        return Response.text(f"VERSION pid={os.getpid()}")


    @app.route("/slow")
    async def slow(request: Request) -> Response:
        print("handling", flush=True)
        await trio.sleep(float(request.query_params["seconds"]))
        return Response.text("done")


    def create_app() -> ASGIApplication:
        return app
''')


class Served(Command):
    """A ``trionet serve`` subprocess."""

    async def url(self) -> str:
        return (await self.wait_for(r"on (https?://\S+) \(Ctrl"))[1]

    async def stop(self, signum: signal.Signals = signal.SIGINT) -> int:
        return await super().stop(signum)


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    (tmp_path / "cli_web.py").write_text(WEB_APP.replace("VERSION", "v1"))
    return tmp_path


def _env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRIONET_DEBUG", "TRIONET_ASGI_WORKER")}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *sys.path])
    return env


async def start(nursery: trio.Nursery, cwd: Path, *args: str) -> Served:
    command = await start_command(nursery, ["serve", *args], cwd=cwd, env=_env(cwd))
    return Served(command.process)


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trionet", *args], cwd=cwd, env=_env(cwd),
                          capture_output=True, text=True, timeout=PATIENCE)


async def get(url: str, path: str = "/", ssl_context: ssl.SSLContext | None = None) -> str:
    """One GET on a new connection; the response (read up to its Content-Length), or "cut"
    if the server hung up first."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    stream: Any = await trio.open_tcp_stream(host, int(port))
    if scheme == "https":
        assert ssl_context is not None
        stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        try:
            while chunk := await stream.receive_some():
                data += chunk
                head, blank, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if blank and length and len(body) >= int(length[1]):
                    break
        except trio.BrokenResourceError:
            pass
    return data.decode(errors="replace") if data else "cut"


def assert_one_line(proc: subprocess.CompletedProcess[str], status: int, *fragments: str
                    ) -> None:
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("trionet ")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], proc.stderr


# -- module paths and --factory ----------------------------------------------------------------


def test_a_file_path_gets_the_module_path_to_use(web_dir: Path) -> None:
    (web_dir / "pkg").mkdir()
    for command, target, hint in (
        ("serve", "./cli_web.py", "name the module instead: cli_web:app"),
        ("serve", "cli_web.py:app", "name the module instead: cli_web:app"),
        ("serve", "pkg/web.py:make", "name the module instead: pkg.web:make"),
        ("run", "./cli_web.py", "name the module instead: cli_web:app"),
    ):
        proc = run_cli(web_dir, command, target)
        assert_one_line(proc, 2, f"trionet {command}: {target!r} is a file path", hint)


def test_factory_needs_the_flag_and_the_flag_needs_a_factory(web_dir: Path) -> None:
    proc = run_cli(web_dir, "serve", "cli_web:create_app")
    assert_one_line(proc, 2, "takes no arguments", "add --factory")
    proc = run_cli(web_dir, "serve", "cli_web:index")
    assert_one_line(proc, 2, "is not an ASGI application", "(scope, receive, send)")
    proc = run_cli(web_dir, "serve", "cli_web:app", "--factory")
    assert_one_line(proc, 2, "is not an application factory")


async def test_factory_is_called_and_served(web_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:create_app", "--factory",
                             "--bind", "127.0.0.1:0")
        response = await get(await served.url())
        status = await served.stop()
    assert response.startswith("HTTP/1.1 200"), response
    assert "v1 pid=" in response
    assert status == 0, served.output


# -- the access log, --log-level, --graceful-timeout, --worker ---------------------------------


async def test_access_log_is_on_by_default_and_can_be_turned_off(web_dir: Path) -> None:
    outputs = []
    for extra in ([], ["--no-access-log"], ["--log-level", "warning"]):
        async with trio.open_nursery() as nursery:
            served = await start(nursery, web_dir, "cli_web:app", "--bind", "127.0.0.1:0",
                                 *extra)
            await get(await served.url(), "/?x=1")
            if not extra:
                await served.wait_for("trionet.access")
            assert await served.stop() == 0, served.output
        outputs.append(served.output)
    logged, off, quiet = outputs
    assert re.search(r'INFO trionet\.access .*127\.0\.0\.1:\d+ "GET /\?x=1 HTTP/1\.1" 200 \d+ '
                     r"[\d.]+s", logged), logged
    assert "trionet.access" not in off, off
    assert "INFO" not in quiet and "trionet.access" not in quiet, quiet


async def test_graceful_timeout_lets_a_long_request_finish(web_dir: Path) -> None:
    # 6 s of work: the default graceful timeout (5 s) would cut it, 30 s lets it finish.
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--bind", "127.0.0.1:0",
                             "--graceful-timeout", "30", "--worker", "hypercorn")
        url = await served.url()

        async def slow() -> None:
            results.append(await get(url, "/slow?seconds=6"))

        nursery.start_soon(slow)
        await served.wait_for("handling")
        status = await served.stop(signal.SIGTERM)
    assert status == 0, served.output
    assert results[0].startswith("HTTP/1.1 200"), results


def test_bad_options_are_usage_errors(web_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(web_dir, "serve", "cli_web:app", "--certfile", "x.pem")
    assert_one_line(proc, 2, "--certfile and --keyfile go together")
    proc = run_cli(web_dir, "serve", "cli_web:app", "--certfile", "x.pem", "--keyfile", "y.pem")
    assert_one_line(proc, 2, "--certfile: no such file: 'x.pem'")
    proc = run_cli(web_dir, "serve", "cli_web:app", "--graceful-timeout", "-1")
    assert_one_line(proc, 2, "--graceful-timeout must be >= 0")
    proc = run_cli(web_dir, "serve", "cli_web:app", "--worker", "uvicorn")
    assert proc.returncode == 2 and "invalid choice: 'uvicorn'" in proc.stderr, proc.stderr


# -- HTTPS and client certificates -------------------------------------------------------------


async def test_https_and_client_certificates(web_dir: Path, tls_ca: trustme.CA) -> None:
    server_cert = tls_ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(web_dir / "server.pem"))
    tls_ca.cert_pem.write_to_path(str(web_dir / "ca.pem"))
    client = ssl.create_default_context()
    tls_ca.configure_trust(client)
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--bind", "127.0.0.1:0",
                             "--certfile", "server.pem", "--keyfile", "server.pem")
        url = await served.url()
        response = await get(url, ssl_context=client)
        assert await served.stop() == 0, served.output
    assert url.startswith("https://"), served.output
    assert response.startswith("HTTP/1.1 200"), response

    with_cert = ssl.create_default_context()
    tls_ca.configure_trust(with_cert)
    tls_ca.issue_cert("client@example.test").configure_cert(with_cert)
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--bind", "127.0.0.1:0",
                             "--certfile", "server.pem", "--keyfile", "server.pem",
                             "--ca-certs", "ca.pem")
        url = await served.url()
        response = await get(url, ssl_context=with_cert)
        try:
            refused = await get(url, ssl_context=client)  # no client certificate
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            refused = f"refused: {exc!r}"
        assert await served.stop() == 0, served.output
    assert response.startswith("HTTP/1.1 200"), response
    assert not refused.startswith("HTTP/"), refused


async def _peer_fingerprint(url: str, client: ssl.SSLContext) -> bytes:
    host, _, port = url.partition("://")[2].rpartition(":")
    stream = trio.SSLStream(await trio.open_tcp_stream(host, int(port)), client,
                            server_hostname=host)
    async with stream:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sighup_reloads_the_certificate(web_dir: Path, tls_ca: trustme.CA,
                                              workers: str) -> None:
    """SIGHUP reads --certfile/--keyfile again: new connections get the new certificate; a
    broken file is reported and the certificate in use stays (under the supervisor of
    --workers, every serving process reloads)."""
    client = ssl.create_default_context()
    tls_ca.configure_trust(client)
    first = tls_ca.issue_cert("127.0.0.1")
    first.private_key_and_cert_chain_pem.write_to_path(str(web_dir / "server.pem"))
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--bind", "127.0.0.1:0",
                             "--workers", workers, "--no-access-log",
                             "--certfile", "server.pem", "--keyfile", "server.pem")
        url = await served.url()
        assert await _peer_fingerprint(url, client) == _der(first)
        second = tls_ca.issue_cert("127.0.0.1")
        second.private_key_and_cert_chain_pem.write_to_path(str(web_dir / "server.pem"))
        mark = len(served.output)
        served.process.send_signal(signal.SIGHUP)
        for _ in range(int(workers)):
            mark = (await served.wait_for("certificate reloaded from server.pem", mark)).end()
        for _ in range(4):  # whichever process accepts
            assert await _peer_fingerprint(url, client) == _der(second)
        (web_dir / "server.pem").write_text("not a certificate")
        served.process.send_signal(signal.SIGHUP)
        for _ in range(int(workers)):
            mark = (await served.wait_for("could not be reloaded, keeping the old one",
                                          mark)).end()
        assert await _peer_fingerprint(url, client) == _der(second)
        assert await served.stop() == 0, served.output


# -- --workers and --reload: a supervisor and its serving processes ----------------------------


def test_workers_and_reload_usage_errors(web_dir: Path) -> None:
    proc = run_cli(web_dir, "serve", "cli_web:app", "--workers", "0")
    assert_one_line(proc, 2, "--workers must be at least 1")
    proc = run_cli(web_dir, "serve", "cli_web:app", "--reload", "--reload-dir", "nowhere")
    assert_one_line(proc, 2, "--reload-dir: no such directory: 'nowhere'")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli(web_dir, "serve", "cli_web:app", "--workers", "2",
                       "--bind", f"127.0.0.1:{port}")
    assert_one_line(proc, 1, f"cannot listen on 127.0.0.1:{port}", "in use")
    proc = run_cli(web_dir, "serve", "cli_web:nothing", "--workers", "2", "--bind", "127.0.0.1:0")
    assert_one_line(proc, 2, "has no attribute 'nothing'")


async def test_two_workers_share_the_socket_and_stop_gracefully(web_dir: Path) -> None:
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--workers", "2",
                             "--bind", "127.0.0.1:0", "--no-access-log")
        url = await served.url()
        assert "2 worker processes" in served.output
        pids = set()
        for _ in range(400):  # the kernel hands each connection to one of the two
            pids.add(re.search(r"pid=(\d+)", await get(url))[1])  # type: ignore[index]
            if len(pids) == 2:
                break
        assert len(pids) == 2, pids

        async def slow() -> None:
            results.append(await get(url, "/slow?seconds=1"))

        nursery.start_soon(slow)
        await served.wait_for("handling")
        status = await served.stop(signal.SIGINT)
    assert status == 0, served.output
    assert results[0].startswith("HTTP/1.1 200"), results
    for pid in pids:
        assert f"trionet[{pid}]: SIGINT received, shutting down" in served.output


async def test_workers_second_signal_stops_at_once(web_dir: Path) -> None:
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--workers", "2",
                             "--bind", "127.0.0.1:0", "--graceful-timeout", "60")
        url = await served.url()

        async def slow() -> None:
            results.append(await get(url, "/slow?seconds=60"))

        nursery.start_soon(slow)
        await served.wait_for("handling")
        served.process.send_signal(signal.SIGTERM)
        await served.wait_for("shutting down 2 worker")
        with trio.fail_after(10):  # generous; measured well under a second
            status = await served.stop(signal.SIGTERM)
    assert status == 143, served.output
    assert results == ["cut"]


async def test_workers_stop_when_the_supervisor_is_killed(web_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--workers", "2",
                             "--bind", "127.0.0.1:0")
        url = await served.url()
        pids = {int(pid) for pid in re.findall(r"\[(\d+)\] \[-\] Running on", served.output)}
        assert len(pids) == 2, served.output
        served.process.kill()  # SIGKILL: the supervisor cannot pass anything on
        await served.finish()
        with trio.fail_after(PATIENCE):
            while any(_alive(pid) for pid in pids):  # noqa: ASYNC110 - other processes
                await trio.sleep(0.1)
        with pytest.raises(OSError):
            await get(url)


def _alive(pid: int) -> bool:
    # Once trionet.testing's mail servers have run in this process, it is a child subreaper
    # (PR_SET_CHILD_SUBREAPER), so the killed supervisor's orphaned workers become *our*
    # children: when they exit they stay zombies, which os.kill(pid, 0) still finds, until
    # we collect them.
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: init (or another subreaper) collects it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_reload_restarts_on_a_change_and_survives_a_broken_file(web_dir: Path) -> None:
    app_file = web_dir / "cli_web.py"

    def write(text: str, bump: int) -> None:
        app_file.write_text(text)
        stat = app_file.stat()  # a later mtime even on a coarse-grained file system
        os.utime(app_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))

    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_dir, "cli_web:app", "--reload", "--bind",
                             "127.0.0.1:0", "--reload-dir", str(web_dir))
        url = await served.url()
        assert "v1 pid=" in await get(url)
        mark = len(served.output)
        write(WEB_APP.replace("VERSION", "v2"), 2)
        await served.wait_for("restarted", mark)
        assert "v2 pid=" in await get(url)
        mark = len(served.output)
        write("def broken(:\n", 4)
        await served.wait_for("restarting at the next change", mark)
        # The application's own error: its traceback is what the developer needs.
        assert "SyntaxError" in served.output[mark:], served.output
        mark = len(served.output)
        write(WEB_APP.replace("VERSION", "v3"), 6)
        await served.wait_for("restarted", mark)
        assert "v3 pid=" in await get(url)
        status = await served.stop(signal.SIGINT)
    assert status == 0, served.output
