"""Private real servers for tests: mosquitto, a Kafka-protocol broker, Dovecot and Postfix.

Every server here is a plain synchronous object that is also a context manager, so it works in
pytest fixtures (see :mod:`trionet.testing._plugin`), in scripts and in benchmarks alike::

    with MosquittoServer() as broker:
        print(broker.info.host, broker.info.port)

How the servers are run:

* Each one is started with :class:`subprocess.Popen` as a direct child of this process, in the
  foreground, with its configuration, data, sockets and logs in a fresh short directory made by
  :func:`tempfile.mkdtemp` under ``/tmp`` (unix socket paths are limited to 108 bytes, so
  pytest's long ``tmp_path`` is not used).
* Every listener is bound to ``127.0.0.1`` on a port the kernel reported free.
* Readiness is polled: every port must be listening *in the server process itself* (checked in
  ``/proc``, so a program that grabbed one of our ports is never mistaken for the server) and
  every unix socket must exist. If the process exits first, or the wait times out,
  :class:`ServerStartError` is raised at once with the end of the server's log in its message.
  A start that failed because another program took a port in the meantime is retried on new
  ports.
* Stopping is by PID only: ``SIGTERM``, a bounded wait, then ``SIGKILL``. Processes the server
  itself forked (Dovecot's and Postfix's workers) are waited for too, so nothing outlives
  :meth:`close`. The temporary directory is then removed.
* A failed start never leaves a process behind.

Nothing here imports trustme, paho-mqtt or kafka-python at module import time; trustme (for the
TLS material) is imported when a server that needs it starts.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import grp
import hashlib
import hmac
import importlib.util
import itertools
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, ClassVar, Final, Literal

from trionet._threads import ThreadLock
from trionet.errors import ConfigurationError, TrionetError

if TYPE_CHECKING:
    from typing import Self

    import trustme

__all__ = [
    "DEFAULT_MAIL_USERS",
    "KAFKA_BOOTSTRAP_ENV",
    "KAFKA_TEST_CONSUMER_CONFIG",
    "LOOPBACK",
    "KafkaBroker",
    "KafkaInfo",
    "MailInfo",
    "MailServers",
    "MailUser",
    "MosquittoInfo",
    "MosquittoServer",
    "ServerError",
    "ServerNotInstalled",
    "ServerStartError",
    "fresh_loopback_address",
]

#: The address every server binds to.
LOOPBACK: Final = "127.0.0.1"

#: Environment variable naming an existing Kafka broker (``host:port``) for :class:`KafkaBroker`.
KAFKA_BOOTSTRAP_ENV: Final = "TRIONET_KAFKA_BOOTSTRAP"

#: Consumer settings for tests, valid for Apache Kafka and the lookalikes alike: the first
#: JoinGroup of some Kafka-protocol brokers waits about ``session_timeout_ms / 2``, which is 22 s
#: with kafka-python's default of 45 s. Pass them as ``KafkaConsumer(**KAFKA_TEST_CONSUMER_CONFIG,
#: ...)``.
KAFKA_TEST_CONSUMER_CONFIG: Final[Mapping[str, int]] = MappingProxyType(
    {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
)

_STOP_TIMEOUT: Final = 15.0
_PORT_ATTEMPTS: Final = 3
_POLL_INTERVAL: Final = 0.005
_SYSTEM_BIN_DIRS: Final = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin")


# -- errors -------------------------------------------------------------------------------------


class ServerError(TrionetError, RuntimeError):
    """A test server could not be started, stopped or used as asked."""


class ServerStartError(ServerError):
    """A server process exited, or did not become ready, during start-up.

    Attributes:
        server: the server's name (``"mosquitto"``, ``"dovecot"``, ...).
        log_tail: the last lines of the server's log files (may be empty).
        port_clash: ``True`` if another program held one of the server's ports (a first start
            is then retried on other ports before this error reaches the caller).
    """

    def __init__(self, message: str, *, server: str, log_tail: str = "") -> None:
        text = message
        if log_tail:
            text = f"{message}\n--- last lines of the {server} log ---\n{log_tail}"
        super().__init__(text)
        self.server = server
        self.log_tail = log_tail
        self.port_clash = False


class ServerNotInstalled(ServerStartError):
    """A program or Python package a server needs is not installed.

    Attributes:
        package: the Debian or PyPI package that provides what is missing.
        installer: ``"apt"`` or ``"pip"``.
    """

    def __init__(
        self, what: str, *, server: str, package: str, installer: Literal["apt", "pip"]
    ) -> None:
        command = (
            f"apt-get install {package}" if installer == "apt" else f"pip install '{package}'"
        )
        super().__init__(
            f"{what}; install the {installer} package {package!r} ({command})", server=server
        )
        self.package = package
        self.installer = installer


# -- small helpers ------------------------------------------------------------------------------


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the kernel reported free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


_PROC_TCP: Final = Path("/proc/net/tcp")


def _listening_sockets(ports: Sequence[int]) -> dict[int, set[int]]:
    """Socket inodes in LISTEN state on 127.0.0.1, per port, from ``/proc/net/tcp``."""
    wanted = set(ports)
    found: dict[int, set[int]] = {port: set() for port in wanted}
    # the kernel prints the address as a 32-bit number in host byte order
    loopback_hex = f"{int.from_bytes(socket.inet_aton(LOOPBACK), sys.byteorder):08X}"
    for row in _PROC_TCP.read_text().splitlines()[1:]:
        fields = row.split()
        address, _, port_hex = fields[1].partition(":")
        port = int(port_hex, 16)
        if port in wanted and fields[3] == "0A" and address == loopback_hex:
            found[port].add(int(fields[9]))
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _ports_listening(pid: int, ports: Sequence[int]) -> list[int]:
    """Return those of ``ports`` on which process ``pid`` itself listens on 127.0.0.1.

    Checking the owner, not just that a connection succeeds, means another program that took one
    of our ports is never mistaken for our server; and no probe connection reaches the server.
    Without ``/proc`` it falls back to connecting.
    """
    if not _PROC_TCP.exists():
        return [port for port in ports if _port_accepts(port)]
    listening = _listening_sockets(ports)
    ours = _socket_inodes(pid) if any(listening.values()) else set()
    return [port for port in ports if listening[port] & ours]


def _short_tempdir(prefix: str) -> Path:
    base = "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _find_program(name: str, *, server: str, package: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_BIN_DIRS])
    found = shutil.which(name, path=search)
    if found is None:
        raise ServerNotInstalled(
            f"the {name!r} program was not found on PATH or in {', '.join(_SYSTEM_BIN_DIRS)}",
            server=server,
            package=package,
            installer="apt",
        )
    return found


def _check_executable(path: Path, *, server: str, package: str, installer: Literal["apt", "pip"]
                      ) -> str:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ServerNotInstalled(
            f"{path} is missing or not executable", server=server, package=package,
            installer=installer,
        )
    return str(path)


def _check_account(name: str, *, group: bool = False, server: str, package: str) -> None:
    try:
        if group:
            grp.getgrnam(name)
        else:
            pwd.getpwnam(name)
    except KeyError:
        kind = "group" if group else "user"
        raise ServerNotInstalled(
            f"the system {kind} {name!r} does not exist (the package creates it)",
            server=server,
            package=package,
            installer="apt",
        ) from None


def _tail(paths: Sequence[Path], lines: int = 40) -> str:
    out: list[str] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        out.extend(f"[{path.name}] {line}" for line in text.splitlines()[-lines:])
    return "\n".join(out)


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


def _check_credential(kind: str, value: str) -> None:
    if not value or any(ch in value for ch in ":\r\n\t ") or not value.isprintable():
        raise ConfigurationError(
            f"{kind} {value!r} must be non-empty, printable and free of ':' and whitespace"
        )


_loopback_counter = itertools.count()
_loopback_lock = ThreadLock()  # tests may ask for addresses from worker threads


def fresh_loopback_address() -> str:
    """Return a loopback address (in ``127.42.0.0/16``) not handed out before in this process.

    Any ``127.x.y.z`` is a local address on Linux, so a client can bind one as its source address
    (``source_address=(fresh_loopback_address(), 0)`` in :mod:`socket`, :mod:`smtplib`, ...). Two
    reasons tests want that against :class:`MailServers`:

    * Dovecot counts a connection whose remote address equals its local one (``127.0.0.1`` to
      ``127.0.0.1``) as *secured*: it then allows plaintext ``LOGIN`` and does not advertise
      ``LOGINDISABLED`` even though TLS is required. Connect from another address to see what a
      remote client sees.
    * After a failed login Dovecot delays the next attempts *from the same address* by 2 s,
      growing to 15 s (its "auth penalty", also applied to SMTP AUTH through Postfix). Make every
      bad-password attempt from its own fresh address, so that no other test is slowed down.

    Returns:
        A dotted-quad IPv4 address such as ``"127.42.0.1"``.
    """
    with _loopback_lock:
        n = next(_loopback_counter)
    hi, lo = divmod(n, 254)
    return f"127.42.{hi % 256}.{lo + 1}"


def _client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))


# -- TLS material -------------------------------------------------------------------------------


def _new_ca(server: str) -> trustme.CA:
    try:
        import trustme
    except ImportError:
        raise ServerNotInstalled(
            "the TLS material of the test servers is made with trustme, which is not installed",
            server=server,
            package="trustme",
            installer="pip",
        ) from None
    return trustme.CA()


@dataclass(frozen=True)
class _TLSFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_tls_files(ca: trustme.CA, directory: Path, identities: Sequence[str]) -> _TLSFiles:
    leaf = ca.issue_cert(*identities)
    files = _TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca.cert_pem.bytes())
    files.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    files.key_file.write_bytes(leaf.private_key_pem.bytes())
    files.key_file.chmod(0o600)
    return files


# -- processes ----------------------------------------------------------------------------------


def _identity(pid: int) -> tuple[int, int] | None:
    """``(pid, start time)`` of a live process, or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return pid, int(fields[19])


def _alive(identity: tuple[int, int]) -> bool:
    return _identity(identity[0]) == identity


def _descendants(pid: int) -> list[tuple[int, int]]:
    """Identities of every live descendant of ``pid`` (from ``/proc/PID/task/*/children``)."""
    found: list[tuple[int, int]] = []
    stack = [pid]
    seen: set[int] = set()
    while stack:
        parent = stack.pop()
        if parent in seen:
            continue
        seen.add(parent)
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for child in children:
                identity = _identity(child)
                if identity is not None:
                    found.append(identity)
                    stack.append(child)
    return found


_subreaper = False


def _become_subreaper() -> None:
    """Make this process adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    Postfix's master exits as soon as it has passed ``SIGTERM`` on, so its workers end as
    orphans. Under an init that does not reap (as in some containers) they would stay zombies;
    as a subreaper this process adopts them and :func:`_reap_orphan` collects them. Best effort.
    """
    global _subreaper
    if _subreaper:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        _subreaper = False


def _reap_orphan(identity: tuple[int, int]) -> None:
    """Collect ``identity`` if it is an adopted zombie (never touches any other process)."""
    pid, start = identity
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] == b"Z" and int(fields[1]) == os.getpid() and int(fields[19]) == start:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _signal_identity(identity: tuple[int, int], sig: int) -> None:
    if _alive(identity):
        with contextlib.suppress(ProcessLookupError):
            os.kill(identity[0], sig)


class _Child:
    """One server process started by us (a direct child), with its readiness conditions."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        output_file: Path,
        log_files: Sequence[Path] = (),
        ready_ports: Sequence[int] = (),
        ready_paths: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        silent_failure_hint: str = "",
    ) -> None:
        self.name = name
        self.silent_failure_hint = silent_failure_hint
        self.argv = list(argv)
        self.cwd = cwd
        self.output_file = output_file
        self.log_files = [*log_files, output_file]
        self.ready_ports = list(ready_ports)
        self.ready_paths = list(ready_paths)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_files, lines)

    def launch(self) -> None:
        if self.pid is not None:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        for path in self.ready_paths:  # a leftover socket from a killed run must not count
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with open(self.output_file, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _LIVE_CHILDREN.add(self)

    def wait_ready(self, timeout: float) -> None:
        proc = self.proc
        assert proc is not None
        ports = list(self.ready_ports)
        paths = list(self.ready_paths)
        deadline = time.monotonic() + timeout
        while True:
            if ports:
                done = _ports_listening(proc.pid, ports)
                ports = [port for port in ports if port not in done]
            paths = [path for path in paths if not path.exists()]
            rc = proc.poll()
            if rc is None and not ports and not paths:
                return
            if rc is not None:
                tail = self.log_tail()
                hint = "" if tail.strip() else self.silent_failure_hint
                error = ServerStartError(
                    f"{self.name} exited with status {rc} before it was ready "
                    f"({shlex.join(self.argv)}){hint}",
                    server=self.name,
                    log_tail=tail,
                )
                # another program took one of our ports between our probe and the bind?
                error.port_clash = "in use" in error.log_tail.lower() or any(
                    _port_accepts(port) for port in self.ready_ports
                )
                raise error
            if time.monotonic() > deadline:
                waiting = [f"127.0.0.1:{port}" for port in ports] + [str(p) for p in paths]
                raise ServerStartError(
                    f"{self.name} was not ready after {timeout:g} s; still waiting for "
                    f"{', '.join(waiting)}",
                    server=self.name,
                    log_tail=self.log_tail(),
                )
            time.sleep(_POLL_INTERVAL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = _STOP_TIMEOUT) -> None:
        """Signal the process by PID and wait for it and for every process it forked.

        The server's own workers get the same signal directly, including workers it forks while
        shutting down (Dovecot's master otherwise waits up to 6 s for a login process that a
        readiness probe had started). After ``timeout`` everything left gets ``SIGKILL``.
        """
        proc = self.proc
        if proc is None:
            return
        try:
            tree: list[tuple[int, int]] = []
            if proc.poll() is None:
                deadline = time.monotonic() + timeout
                # workers known before the master goes (Postfix's master exits within ms)
                tree = _descendants(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
                for identity in tree:
                    _signal_identity(identity, sig)
                for rounds in itertools.count():
                    # a worker forked but not yet exec'ed loses the signal at exec: repeat it
                    for identity in _descendants(proc.pid):
                        if identity not in tree:
                            tree.append(identity)
                            _signal_identity(identity, sig)
                        elif rounds % 10 == 9:
                            _signal_identity(identity, sig)
                    try:
                        proc.wait(0.01)
                        break
                    except subprocess.TimeoutExpired:
                        if time.monotonic() > deadline:
                            sig = signal.SIGKILL
                            for identity in tree:
                                _signal_identity(identity, sig)
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(proc.pid, sig)
            self._reap_tree(tree, timeout)
        finally:
            _LIVE_CHILDREN.discard(self)

    @staticmethod
    def _reap_tree(tree: list[tuple[int, int]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        remaining = [identity for identity in tree if _alive(identity)]
        while remaining and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)
            remaining = [identity for identity in remaining if _alive(identity)]
        for identity in remaining:
            _signal_identity(identity, signal.SIGKILL)
        for identity in tree:
            _reap_orphan(identity)


_LIVE_CHILDREN: set[_Child] = set()


@atexit.register
def _stop_forgotten_children() -> None:
    """Last resort at interpreter exit: stop servers whose owner never called ``close()``."""
    for child in list(_LIVE_CHILDREN):
        child.stop(timeout=5.0)


# -- the common server life cycle ---------------------------------------------------------------


class _ServerProcesses:
    """Start/stop/restart/close for a set of child processes sharing one temporary directory.

    Subclasses implement :meth:`_check_installed` (fail early, before anything is created),
    :meth:`_prepare` (port-independent files), :meth:`_configure` (choose ports, write the config
    files, set :attr:`_children`) and :meth:`_publish` (build the frozen info).
    """

    _server_name: ClassVar[str]

    def __init__(self, *, startup_timeout: float) -> None:
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._children: list[_Child] = []
        self._configured = False

    # subclass hooks
    def _check_installed(self) -> None:
        raise NotImplementedError

    def _prepare(self, directory: Path) -> None:
        raise NotImplementedError

    def _configure(self, directory: Path) -> None:
        raise NotImplementedError

    def _publish(self, directory: Path) -> None:
        raise NotImplementedError

    # public life cycle
    @property
    def directory(self) -> Path:
        """The server's temporary directory (configuration, data, sockets, logs)."""
        if self._dir is None:
            raise ServerError(f"{self._server_name} has not been started")
        return self._dir

    @property
    def running(self) -> bool:
        """Whether every process of this server is alive."""
        return bool(self._children) and all(child.pid is not None for child in self._children)

    @property
    def pids(self) -> tuple[int, ...]:
        """PIDs of the server's main processes that are alive (our direct children)."""
        return tuple(pid for child in self._children if (pid := child.pid) is not None)

    def start(self) -> None:
        """Start the server and wait until it is ready.

        The first call creates the temporary directory, picks free ports and writes the
        configuration. Later calls (after :meth:`stop` or :meth:`kill`) start the same
        configuration again, on the same ports and with the same data.

        Raises:
            ServerNotInstalled: a program or package the server needs is missing.
            ServerStartError: the server exited or did not become ready in time; the message ends
                with the server's log. No process is left running.
            ServerError: the server is already running.
        """
        if any(child.pid is not None for child in self._children):
            raise ServerError(f"{self._server_name} is already running")
        if self._configured:
            self._launch_all()
            return
        self._check_installed()
        directory = _short_tempdir(f"trionet-{self._server_name}-")
        try:
            self._prepare(directory)
            for attempt in range(_PORT_ATTEMPTS):
                self._configure(directory)
                try:
                    self._launch_all()
                except ServerStartError as exc:
                    # another process may have taken a port between our probe and the bind
                    if attempt + 1 < _PORT_ATTEMPTS and exc.port_clash:
                        continue
                    raise
                break
            self._publish(directory)
        except BaseException:
            self._stop_all(signal.SIGTERM)
            self._children = []
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._dir = directory
        self._configured = True

    def stop(self) -> None:
        """Stop every process gracefully (``SIGTERM`` by PID, then ``SIGKILL`` if it hangs).

        The temporary directory and the ports are kept, so :meth:`start` can bring the same server
        back. Stopping a stopped server does nothing.
        """
        self._stop_all(signal.SIGTERM)

    def kill(self) -> None:
        """Kill every process with ``SIGKILL``, as a crash would; :meth:`start` brings it back."""
        self._stop_all(signal.SIGKILL)

    def restart(self, *, hard: bool = False) -> None:
        """Stop and start again on the same ports, keeping the data directory.

        Args:
            hard: ``True`` kills with ``SIGKILL`` (state not yet saved is lost, clients see the
                connection drop without any goodbye); ``False`` stops with ``SIGTERM``.
        """
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop every process, wait for them and their workers, and delete the directory.

        A later :meth:`start` begins afresh, with new ports and a new directory.
        """
        try:
            self._stop_all(signal.SIGTERM)
        finally:
            self._children = []
            self._configured = False
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of each of the server's log files."""
        return "\n".join(child.log_tail(lines) for child in self._children)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # internals
    def _launch_all(self) -> None:
        started: list[_Child] = []
        try:
            for child in self._children:
                child.launch()
                started.append(child)
                child.wait_ready(self._startup_timeout)
        except BaseException:
            for child in reversed(started):
                child.stop()
            raise

    def _stop_all(self, sig: int) -> None:
        errors: list[BaseException] = []
        for child in reversed(self._children):
            try:
                child.stop(sig)
            except BaseException as exc:  # keep stopping the others, then re-raise
                errors.append(exc)
        if errors:
            raise errors[0]


# -- mosquitto ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MosquittoInfo:
    """How to reach a :class:`MosquittoServer`. Every listener is on :attr:`host`.

    Attributes:
        host: ``"127.0.0.1"``.
        port: plain MQTT over TCP, anonymous clients allowed.
        auth_port: plain MQTT over TCP; only :attr:`username` / :attr:`password` may connect
            (anything else gets CONNACK "not authorized").
        tls_port: MQTT over TLS with a certificate for ``localhost`` and ``127.0.0.1`` issued by
            the CA in :attr:`ca_file`; anonymous clients allowed.
        ws_port: MQTT over WebSockets (any path), anonymous clients allowed.
        username: the user accepted on :attr:`auth_port`.
        password: that user's password.
        ca_file: PEM file of the CA that issued the TLS listener's certificate.
        data_dir: where mosquitto keeps ``mosquitto.db`` (persistence, autosaved every second).
        log_file: mosquitto's log (connections included).
        ext_auth_port: with ``MosquittoServer(auth_plugin=True)``: plain MQTT over TCP where
            only MQTT 5 enhanced authentication lets a client in (the test plugin's methods:
            ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` and ``TRIONET-TEST``, described in
            ``trionet/testing/mosquitto_auth_plugin.c``); None without it.
        ext_auth_tls_port: the same over TLS (the certificate of :attr:`tls_port`).
        scram_user: the SCRAM user name the plugin knows.
        scram_password: that user's password.
        scram_forged_user: a second SCRAM user, with the same password, whom the plugin
            authenticates but answers with a wrong server signature (a broker that cannot
            prove it knows the password).
    """

    host: str
    port: int
    auth_port: int
    tls_port: int
    ws_port: int
    username: str
    password: str
    ca_file: Path
    data_dir: Path
    log_file: Path
    ext_auth_port: int | None = None
    ext_auth_tls_port: int | None = None
    scram_user: str = ""
    scram_password: str = ""
    scram_forged_user: str = ""

    def ssl_context(self) -> ssl.SSLContext:
        """Return a new client context that trusts :attr:`ca_file` (and checks host names)."""
        return _client_context(self.ca_file)


class MosquittoServer(_ServerProcesses):
    """A private mosquitto 2 broker with plain, password, TLS and WebSockets listeners.

    Persistence is on (``autosave_interval 1``), so a :meth:`restart` keeps retained messages,
    persistent sessions and queued QoS 1/2 messages; ``restart(hard=True)`` (``SIGKILL``) loses
    what arrived in the last second, as a crash would. Restarts reuse the same ports.

    The configuration sets ``user`` to the current user (otherwise mosquitto started as root
    switches to the ``mosquitto`` user and cannot read its own files) and ``socket_domain ipv4``
    on the WebSockets listener (otherwise libwebsockets binds every interface).

    Args:
        ca: a trustme CA to issue the TLS certificate from (a new CA if ``None``).
        username: the user allowed on the password listener.
        password: that user's password.
        startup_timeout: seconds to wait for the listeners before giving up.
        binary: path of the mosquitto program (found on ``PATH`` and in ``/usr/sbin`` if None).
        acl: the text of an ACL file (mosquitto's ``acl_file`` format) for the anonymous plain
            listener (:attr:`MosquittoInfo.port`), for example the two lines
            ``topic readwrite #`` and ``topic deny secret/#``; None (default): no ACL, every
            topic is allowed. The other listeners never get it.
        max_packet_size: mosquitto's ``max_packet_size`` (bytes, for every listener; announced
            to MQTT 5 clients in CONNACK), or None (default) for mosquitto's own limit.
        extra_config: more lines for the global part of ``mosquitto.conf`` (for example
            ``retain_available false``).
        listener_config: more lines for the anonymous plain listener (for example
            ``max_qos 1``).
        auth_plugin: add two listeners (:attr:`MosquittoInfo.ext_auth_port`, and
            :attr:`~MosquittoInfo.ext_auth_tls_port` with TLS) guarded by the test
            plugin for MQTT 5 enhanced authentication (``mosquitto_auth_plugin.c`` beside this
            module, compiled with gcc on first use and cached by the hash of its source in
            ``~/.cache/trionet``; needs the Debian
            packages ``gcc``, ``mosquitto-dev``, ``libmosquitto-dev`` and ``libssl-dev``).

    Raises:
        ConfigurationError: the user name or password contains ``:`` or whitespace, or
            *max_packet_size* is not an int of at least 20.
    """

    _server_name = "mosquitto"

    def __init__(
        self,
        *,
        ca: trustme.CA | None = None,
        username: str = "trionet",
        password: str = "trionet-mqtt-pw",
        startup_timeout: float = 10.0,
        binary: str | None = None,
        acl: str | None = None,
        max_packet_size: int | None = None,
        extra_config: str = "",
        listener_config: str = "",
        auth_plugin: bool = False,
    ) -> None:
        _check_credential("MQTT user name", username)
        _check_credential("MQTT password", password)
        if max_packet_size is not None and (
            not isinstance(max_packet_size, int) or max_packet_size < 20
        ):
            raise ConfigurationError("max_packet_size must be an int >= 20 (bytes)")
        super().__init__(startup_timeout=startup_timeout)
        self._acl = acl
        self._max_packet_size = max_packet_size
        self._extra_config = extra_config
        self._listener_config = listener_config
        self._ca = ca
        self._username = username
        self._password = password
        self._binary = binary
        self._info: MosquittoInfo | None = None
        self._tls: _TLSFiles | None = None
        self._ports = (0, 0, 0, 0)
        self._auth_plugin = auth_plugin
        self._plugin: Path | None = None
        self._ext_auth_port = 0
        self._ext_auth_tls_port = 0
        self._scram = ("scram-user", secrets.token_urlsafe(12), "scram-forger")

    @property
    def info(self) -> MosquittoInfo:
        """Connection details; available once the server has been started."""
        if self._info is None:
            raise ServerError("mosquitto has not been started")
        return self._info

    @property
    def pid(self) -> int | None:
        """The broker's PID while it runs, else ``None``."""
        return self.pids[0] if self.pids else None

    def _check_installed(self) -> None:
        if self._binary is None:
            self._binary = _find_program("mosquitto", server="mosquitto", package="mosquitto")
        else:
            _check_executable(
                Path(self._binary), server="mosquitto", package="mosquitto", installer="apt"
            )
        if self._auth_plugin:
            self._plugin = build_auth_plugin()

    def _prepare(self, directory: Path) -> None:
        ca = self._ca if self._ca is not None else _new_ca("mosquitto")
        self._tls = _write_tls_files(ca, directory, ("localhost", LOOPBACK))
        (directory / "data").mkdir()
        salt = os.urandom(12)
        rounds = 101
        key = hashlib.pbkdf2_hmac("sha512", self._password.encode(), salt, rounds, 64)
        line = (
            f"{self._username}:$7${rounds}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}\n"
        )
        _write_private(directory / "passwd", line)
        if self._acl is not None:
            _write_private(directory / "acl", self._acl)

    def _configure(self, directory: Path) -> None:
        assert self._tls is not None
        assert self._binary is not None
        port, auth_port, tls_port, ws_port = (_free_port() for _ in range(4))
        self._ports = (port, auth_port, tls_port, ws_port)
        ready: tuple[int, ...] = self._ports
        ext_auth = ""
        if self._plugin is not None:
            self._ext_auth_port = _free_port()
            self._ext_auth_tls_port = _free_port()
            ready = (*ready, self._ext_auth_port, self._ext_auth_tls_port)
            user, password, forger = self._scram
            plugin = (f"allow_anonymous false\nplugin {self._plugin}\n"
                      f"plugin_opt_user {user}:{password}\n"
                      f"plugin_opt_forged_user {forger}:{password}\n")
            ext_auth = f"""
listener {self._ext_auth_port} {LOOPBACK}
{plugin}
listener {self._ext_auth_tls_port} {LOOPBACK}
cafile {self._tls.ca_file}
certfile {self._tls.cert_file}
keyfile {self._tls.key_file}
tls_version tlsv1.2
{plugin}"""
        me = pwd.getpwuid(os.getuid()).pw_name
        limits = self._extra_config
        if limits and not limits.endswith("\n"):
            limits += "\n"
        if self._max_packet_size is not None:
            limits += f"max_packet_size {self._max_packet_size}\n"
        plain_acl = self._listener_config
        if plain_acl and not plain_acl.endswith("\n"):
            plain_acl += "\n"
        if self._acl is not None:
            plain_acl += f"acl_file {directory / 'acl'}\n"
        conf = f"""\
# private mosquitto written by trionet.testing
user {me}
per_listener_settings true
set_tcp_nodelay true
persistence true
persistence_location {directory / "data"}/
persistence_file mosquitto.db
autosave_interval 1
log_dest file {directory / "mosquitto.log"}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
{limits}
listener {port} {LOOPBACK}
allow_anonymous true
{plain_acl}
listener {auth_port} {LOOPBACK}
allow_anonymous false
password_file {directory / "passwd"}

listener {tls_port} {LOOPBACK}
allow_anonymous true
cafile {self._tls.ca_file}
certfile {self._tls.cert_file}
keyfile {self._tls.key_file}
tls_version tlsv1.2

listener {ws_port} {LOOPBACK}
protocol websockets
socket_domain ipv4
allow_anonymous true
{ext_auth}"""
        (directory / "mosquitto.conf").write_text(conf)
        self._children = [
            _Child(
                "mosquitto",
                [self._binary, "-c", str(directory / "mosquitto.conf")],
                cwd=directory,
                output_file=directory / "mosquitto.out",
                log_files=[directory / "mosquitto.log"],
                ready_ports=ready,
            )
        ]

    def _publish(self, directory: Path) -> None:
        assert self._tls is not None
        port, auth_port, tls_port, ws_port = self._ports
        self._info = MosquittoInfo(
            host=LOOPBACK,
            port=port,
            auth_port=auth_port,
            tls_port=tls_port,
            ws_port=ws_port,
            username=self._username,
            password=self._password,
            ca_file=self._tls.ca_file,
            data_dir=directory / "data",
            log_file=directory / "mosquitto.log",
            ext_auth_port=self._ext_auth_port if self._plugin is not None else None,
            ext_auth_tls_port=self._ext_auth_tls_port if self._plugin is not None else None,
            scram_user=self._scram[0] if self._plugin is not None else "",
            scram_password=self._scram[1] if self._plugin is not None else "",
            scram_forged_user=self._scram[2] if self._plugin is not None else "",
        )


#: The C source of the test plugin for MQTT 5 enhanced authentication (SCRAM-SHA-256/512 with
#: one user, and ``TRIONET-TEST``, which misbehaves on request; its header comment says how).
AUTH_PLUGIN_SOURCE: Final = Path(__file__).with_name("mosquitto_auth_plugin.c")

_PLUGIN_HEADERS: Final = (
    ("/usr/include/mosquitto_plugin.h", "mosquitto-dev"),
    ("/usr/include/mosquitto.h", "libmosquitto-dev"),
    ("/usr/include/openssl/evp.h", "libssl-dev"),
)


def build_auth_plugin() -> Path:
    """Compile :data:`AUTH_PLUGIN_SOURCE` (once: the result is cached under the user's cache
    directory, named by the hash of the source) and return the shared object's path.

    Raises:
        ServerNotInstalled: gcc or a header package is missing.
        ServerStartError: the compiler failed.
    """
    source = AUTH_PLUGIN_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trionet"
    target = cache / f"mosquitto-auth-{digest}.so"
    if target.is_file():
        return target
    gcc = _find_program("gcc", server="mosquitto", package="gcc")
    for header, package in _PLUGIN_HEADERS:
        if not Path(header).is_file():
            raise ServerNotInstalled(f"{header} is missing (the test plugin needs it)",
                                     server="mosquitto", package=package, installer="apt")
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = cache / f".mosquitto-auth-{digest}-{os.getpid()}.so"
    result = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(partial), str(AUTH_PLUGIN_SOURCE),
         "-lcrypto"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ServerStartError(f"gcc could not build the test plugin: {result.stderr[-2000:]}",
                               server="mosquitto")
    os.replace(partial, target)  # (atomic: a concurrent run sees all of it or nothing)
    return target


# -- Kafka --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaInfo:
    """How to reach a :class:`KafkaBroker`.

    Attributes:
        host: the broker's host.
        port: the broker's port.
        bootstrap_servers: ``"host:port"``, for ``bootstrap_servers=``.
        external: ``True`` if the broker came from ``TRIONET_KAFKA_BOOTSTRAP`` (not started by
            us, so it cannot be restarted and may hold topics from earlier runs).
        data_dir: noida-db's data directory (``None`` for an external broker).
    """

    host: str
    port: int
    bootstrap_servers: str
    external: bool
    data_dir: Path | None


def _noida_binary() -> Path:
    spec = importlib.util.find_spec("noida_db")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ServerNotInstalled(
            "the Python package noida_db is not installed",
            server="noida-db",
            package="noida-db==0.2.3",
            installer="pip",
        )
    return Path(locations[0]) / "noida-db"


def _parse_bootstrap(value: str) -> tuple[str, int]:
    host, sep, port_text = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(
            f"{KAFKA_BOOTSTRAP_ENV} must be 'host:port' (one broker), got {value!r}"
        )
    return host, int(port_text)


class KafkaBroker(_ServerProcesses):
    """A Kafka-protocol broker for tests: a private noida-db, or an existing broker.

    By default it runs ``noida-db start --only kafka`` (the ``noida-db`` package from PyPI, a
    Kafka-protocol emulator; there is no Apache Kafka to be had on this kind of machine) on a free
    loopback port, with its data in a temporary directory; it keeps topics, records and committed
    offsets across :meth:`restart`. With ``bootstrap="host:port"`` nothing is started and
    :attr:`info` points at that broker. :meth:`from_env` chooses between the two with the
    ``TRIONET_KAFKA_BOOTSTRAP`` environment variable.

    Tests against either should use unique topic and group names, and consumers should pass
    :data:`KAFKA_TEST_CONSUMER_CONFIG`. Avoid kafka-python's ``describe_cluster()`` against
    noida-db: it offers DescribeCluster v0 only, which kafka-python 3.0 mis-parses.

    Args:
        bootstrap: ``"host:port"`` of an existing broker to use instead of starting one.
        startup_timeout: seconds to wait for the broker (or an external broker to accept a TCP
            connection) before giving up.

    Raises:
        ConfigurationError: ``bootstrap`` is not ``host:port``.
    """

    _server_name = "kafka"

    def __init__(self, *, bootstrap: str | None = None, startup_timeout: float = 30.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self._external = _parse_bootstrap(bootstrap) if bootstrap is not None else None
        self._info: KafkaInfo | None = None
        self._binary: str | None = None
        self._port = 0

    @classmethod
    def from_env(cls, *, startup_timeout: float = 30.0) -> KafkaBroker:
        """Use the broker named by ``TRIONET_KAFKA_BOOTSTRAP`` if it is set, else noida-db.

        Raises:
            ConfigurationError: the variable is set but is not ``host:port``.
        """
        value = os.environ.get(KAFKA_BOOTSTRAP_ENV, "").strip()
        return cls(bootstrap=value or None, startup_timeout=startup_timeout)

    @property
    def info(self) -> KafkaInfo:
        """Connection details; available once the broker has been started."""
        if self._info is None:
            raise ServerError("the Kafka broker has not been started")
        return self._info

    @property
    def external(self) -> bool:
        """Whether this object points at an existing broker instead of running noida-db."""
        return self._external is not None

    @property
    def pid(self) -> int | None:
        """noida-db's PID while it runs, else ``None`` (always ``None`` when external)."""
        return self.pids[0] if self.pids else None

    def start(self) -> None:
        """Start noida-db, or check that the external broker accepts TCP connections.

        Raises:
            ServerNotInstalled: noida-db is not installed.
            ServerStartError: the broker did not become ready (or is unreachable).
        """
        if self._external is None:
            super().start()
            return
        host, port = self._external
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"the Kafka broker {host}:{port} from {KAFKA_BOOTSTRAP_ENV} does not "
                        f"accept connections: {exc}",
                        server="kafka",
                    ) from exc
            time.sleep(0.05)
        self._info = KafkaInfo(
            host=host, port=port, bootstrap_servers=f"{host}:{port}", external=True, data_dir=None
        )

    def stop(self) -> None:
        """Stop noida-db (data is saved); see :meth:`start`.

        Raises:
            ServerError: the broker is external.
        """
        self._refuse_if_external("stop")
        super().stop()

    def kill(self) -> None:
        """Kill noida-db with ``SIGKILL``.

        Raises:
            ServerError: the broker is external.
        """
        self._refuse_if_external("kill")
        super().kill()

    @property
    def saved_at(self) -> int | None:
        """When noida-db last wrote its state to disk (``st_mtime_ns``), or ``None`` if never.

        noida-db keeps topics, records, committed offsets and producer state in memory and
        writes them all to ``<data_dir>/kafka.json`` about once a second (and on ``SIGTERM``):
        a ``SIGKILL`` loses whatever it acknowledged since the last write. A test that needs
        everything acknowledged up to some moment to survive a kill waits, after that moment,
        for this value to change twice (the first change may be a write that had already
        started).

        Raises:
            ServerError: the broker is external.
        """
        self._refuse_if_external("inspect")
        data_dir = self.info.data_dir
        assert data_dir is not None  # (only an external broker has none)
        try:
            return (data_dir / "kafka.json").stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _refuse_if_external(self, what: str) -> None:
        if self._external is not None:
            raise ServerError(
                f"cannot {what} the external Kafka broker from {KAFKA_BOOTSTRAP_ENV}; "
                "only a broker trionet started can be stopped or restarted"
            )

    def _check_installed(self) -> None:
        self._binary = _check_executable(
            _noida_binary(), server="noida-db", package="noida-db==0.2.3", installer="pip"
        )

    def _prepare(self, directory: Path) -> None:
        (directory / "data").mkdir()

    def _configure(self, directory: Path) -> None:
        assert self._binary is not None
        self._port = _free_port()
        self._children = [
            _Child(
                "noida-db",
                [
                    self._binary, "start",
                    "--data-dir", str(directory / "data"),
                    "--host", LOOPBACK,
                    "--only", "kafka",
                    "--kafka-port", str(self._port),
                ],
                cwd=directory,
                output_file=directory / "noida-db.log",
                ready_ports=[self._port],
            )
        ]

    def _publish(self, directory: Path) -> None:
        self._info = KafkaInfo(
            host=LOOPBACK,
            port=self._port,
            bootstrap_servers=f"{LOOPBACK}:{self._port}",
            external=False,
            data_dir=directory / "data",
        )


# -- mail: Dovecot + Postfix --------------------------------------------------------------------


@dataclass(frozen=True)
class MailUser:
    """One mailbox of :class:`MailServers`.

    Attributes:
        name: the local part, e.g. ``"alice"``.
        address: the full address, e.g. ``"alice@example.test"``; it is also the login name for
            SMTP AUTH and IMAP.
        password: the password.
    """

    name: str
    address: str
    password: str


@dataclass(frozen=True)
class MailInfo:
    """How to reach :class:`MailServers`. Every TCP listener is on :attr:`host`.

    Mail flows ``SMTP client -> Postfix -> LMTP -> Dovecot -> Maildir`` and is read back with
    IMAP from Dovecot. SMTP AUTH is checked by Dovecot, so one password works for both.

    Attributes:
        host: ``"127.0.0.1"``.
        smtp_port: Postfix SMTP. Offers ``STARTTLS``; ``AUTH PLAIN LOGIN`` only after it; mail is
            accepted only from authenticated clients and only for :attr:`domain`.
        smtps_port: Postfix SMTP over implicit TLS, otherwise the same as :attr:`smtp_port`.
        imap_port: Dovecot IMAP with ``STARTTLS``. Plaintext login is refused before TLS, but
            Dovecot counts a connection from ``127.0.0.1`` to ``127.0.0.1`` as secured and allows
            it there: connect from :func:`fresh_loopback_address` to see ``LOGINDISABLED``.
        imaps_port: Dovecot IMAP over implicit TLS.
        smtp_plain_port: Postfix SMTP without TLS: no ``STARTTLS``, and ``AUTH PLAIN LOGIN``
            offered in clear (Dovecot accepts the password: loopback clients count as secured).
            For tests of what a client does with a server that offers no encryption (it should
            refuse to send the password unless told otherwise).
        lmtp_socket: Dovecot's LMTP unix socket (``smtplib.LMTP(str(lmtp_socket))`` delivers
            straight into the mailboxes, no authentication).
        domain: the mail domain, ``"example.test"``.
        users: the mailboxes.
        ca_file: PEM file of the CA that issued the servers' certificate (for ``localhost``,
            ``127.0.0.1`` and ``mail.example.test``).
        mail_dir: the base of the mailboxes; see :meth:`maildir`.
        dovecot_log: Dovecot's log file.
        postfix_log: Postfix's log file.

    A failed login makes Dovecot delay later attempts from the same client address by seconds
    (SMTP AUTH included): make bad-password attempts from :func:`fresh_loopback_address`.
    """

    host: str
    smtp_port: int
    smtps_port: int
    imap_port: int
    imaps_port: int
    lmtp_socket: Path
    domain: str
    users: tuple[MailUser, ...]
    ca_file: Path
    mail_dir: Path
    dovecot_log: Path
    postfix_log: Path
    smtp_plain_port: int
    oauth2_key: bytes | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """Return a new client context that trusts :attr:`ca_file` (and checks host names)."""
        return _client_context(self.ca_file)

    def oauth2_token(self, user: MailUser | str, *, lifetime: float = 300.0) -> str:
        """Return an OAuth 2.0 access token the servers accept for ``user`` (XOAUTH2 and
        OAUTHBEARER), valid for ``lifetime`` seconds (negative: already expired).

        The token is a JWT signed (HS256) with :attr:`oauth2_key`, which Dovecot validates
        locally, as it would a token from an identity provider.

        Raises:
            ServerError: the servers were started without ``oauth2=True``.
        """
        if self.oauth2_key is None:
            raise ServerError("the mail servers were started without oauth2=True")
        address = user.address if isinstance(user, MailUser) else self.user(user).address
        now = int(time.time())
        claims = {"sub": address, "email": address, "iat": now, "nbf": now - 60,
                  "exp": now + int(lifetime), "jti": uuid.uuid4().hex}
        return _jwt_hs256(claims, self.oauth2_key)

    def user(self, name: str) -> MailUser:
        """Return the mailbox whose local part or full address is ``name``.

        Raises:
            KeyError: there is no such user.
        """
        for user in self.users:
            if name in (user.name, user.address):
                return user
        raise KeyError(name)

    def maildir(self, user: MailUser | str) -> Path:
        """Return the Maildir of ``user`` (with ``new/``, ``cur/`` and ``tmp/`` once it has mail).

        The files belong to the ``mail`` user; tests running as root can read them.
        """
        address = user.address if isinstance(user, MailUser) else self.user(user).address
        return self.mail_dir / address / "Maildir"


#: The mailboxes :class:`MailServers` creates unless told otherwise.
DEFAULT_MAIL_USERS: Final[Mapping[str, str]] = MappingProxyType(
    {"alice": "alice-pw-123", "bob": "bob-pw-456"}
)

# Postfix services: (name, type, private, unpriv, chroot, wakeup, maxproc, command); the smtpd
# listeners are added per run. Every chroot is off: the queue lives in our temporary directory.
_POSTFIX_SERVICES: Final = (
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
)
_POSTFIX_QUEUES: Final = (
    "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
    "saved", "trace",
)


class MailServers(_ServerProcesses):
    """A private Dovecot (IMAP, IMAPS, LMTP, SASL) and Postfix (SMTP, SMTPS) for tests.

    Both are real servers started from their Debian packages (``dovecot-core``,
    ``dovecot-imapd``, ``dovecot-lmtpd``, ``postfix``) with configurations that touch nothing in
    ``/etc`` or ``/var``. Postfix's ``master`` must run as root, so this needs root. Dovecot's
    mail processes run as the ``mail`` user.

    Two behaviours of Dovecot matter to tests (see :func:`fresh_loopback_address`): a client on
    ``127.0.0.1`` counts as secured (plaintext login allowed), and failed logins slow down later
    logins from the same address.

    Postfix's master exits as soon as it has passed ``SIGTERM`` on to its workers. So that those
    workers do not stay zombies under an init that does not reap them (as in some containers),
    starting :class:`MailServers` makes the calling process a child subreaper on Linux
    (``prctl(PR_SET_CHILD_SUBREAPER)``); :meth:`close` then collects them.

    Args:
        ca: a trustme CA to issue the TLS certificate from (a new CA if ``None``).
        users: local part -> password of each mailbox (alice and bob by default).
        domain: the mail domain.
        startup_timeout: seconds to wait for each server before giving up.
        oauth2: also accept OAuth 2.0 bearer tokens (``AUTH XOAUTH2`` and ``OAUTHBEARER``, for
            IMAP and, through Dovecot's SASL, SMTP): Dovecot validates them locally as JWTs
            signed with a random key (:attr:`MailInfo.oauth2_key`); :meth:`MailInfo.oauth2_token`
            makes them. Passwords keep working.

    Raises:
        ConfigurationError: a user name or password contains ``:``, ``@`` or whitespace.
    """

    _server_name = "mail"

    def __init__(
        self,
        *,
        ca: trustme.CA | None = None,
        users: Mapping[str, str] = DEFAULT_MAIL_USERS,
        domain: str = "example.test",
        startup_timeout: float = 20.0,
        oauth2: bool = False,
    ) -> None:
        if not users:
            raise ConfigurationError("MailServers needs at least one user")
        _check_credential("mail domain", domain)
        for name, password in users.items():
            _check_credential("mail user name", name)
            _check_credential("mail password", password)
            if "@" in name:
                raise ConfigurationError(f"give the local part only, not {name!r}")
        super().__init__(startup_timeout=startup_timeout)
        self._ca = ca
        self._domain = domain
        self._users = tuple(
            MailUser(name, f"{name}@{domain}", password) for name, password in users.items()
        )
        self._info: MailInfo | None = None
        self._tls: _TLSFiles | None = None
        self._dovecot = ""
        self._postfix_master = ""
        self._ports = (0, 0, 0, 0, 0)
        self._oauth2_key = secrets.token_bytes(32) if oauth2 else None

    @property
    def info(self) -> MailInfo:
        """Connection details; available once the servers have been started."""
        if self._info is None:
            raise ServerError("the mail servers have not been started")
        return self._info

    def _check_installed(self) -> None:
        self._dovecot = _find_program("dovecot", server="dovecot", package="dovecot-core")
        libexec = Path("/usr/lib/dovecot")
        if libexec.is_dir():  # Debian layout: the protocols are separate packages
            for program, package in (("imap", "dovecot-imapd"), ("lmtp", "dovecot-lmtpd")):
                _check_executable(
                    libexec / program, server="dovecot", package=package, installer="apt"
                )
        for user in ("dovecot", "dovenull"):
            _check_account(user, server="dovecot", package="dovecot-core")
        _check_account("mail", server="dovecot", package="base-passwd")
        self._postfix_master = _check_executable(
            Path("/usr/lib/postfix/sbin/master"),
            server="postfix",
            package="postfix",
            installer="apt",
        )
        _check_account("postfix", server="postfix", package="postfix")
        _check_account("postdrop", group=True, server="postfix", package="postfix")
        if os.geteuid() != 0:
            raise ServerStartError(
                "Postfix's master(8) must be started as root, and this process is not root",
                server="postfix",
            )
        _become_subreaper()

    def _prepare(self, directory: Path) -> None:
        directory.chmod(0o755)  # Dovecot's auth and mail processes run as other users
        ca = self._ca if self._ca is not None else _new_ca("mail")
        self._tls = _write_tls_files(ca, directory, ("localhost", LOOPBACK, f"mail.{self._domain}"))
        for sub in ("dovecot", "dovecot/state", "mail", "postfix", "postfix/spool"):
            (directory / sub).mkdir()
        mail_user = pwd.getpwnam("mail")
        os.chown(directory / "mail", mail_user.pw_uid, mail_user.pw_gid)
        lines = "".join(f"{user.address}:{_ssha512(user.password)}::::::\n" for user in self._users)
        (directory / "dovecot" / "users").write_text(lines)
        if self._oauth2_key is not None:
            self._write_oauth2_key(directory / "dovecot", self._oauth2_key)
        self._make_postfix_queue(directory / "postfix")

    @staticmethod
    def _write_oauth2_key(dovecot_dir: Path, key: bytes) -> None:
        """The HS256 key of Dovecot's local JWT validation, where its ``fs:posix`` dict looks it
        up: ``<azp>/<alg>/<kid>``, each ``default`` when the token does not name one."""
        key_dir = dovecot_dir / "oauth2-keys" / "default" / "HS256"
        key_dir.mkdir(parents=True)
        _write_private(key_dir / "default", base64.b64encode(key).decode("ascii"))
        owner = pwd.getpwnam("dovecot")
        for path in (dovecot_dir / "oauth2-keys", key_dir.parent, key_dir, key_dir / "default"):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _oauth2_conf(self, dovecot_dir: Path) -> tuple[str, str]:
        """The mechanisms line's extra and the passdb block for ``oauth2=True``."""
        if self._oauth2_key is None:
            return "", ""
        conf = dovecot_dir / "oauth2.conf.ext"
        conf.write_text(
            "introspection_mode = local\n"
            f"local_validation_key_dict = fs:posix:prefix={dovecot_dir / 'oauth2-keys'}/\n"
            "username_attribute = email\n"
        )
        passdb = f"""
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {conf}
}}
"""
        return " xoauth2 oauthbearer", passdb

    def _configure(self, directory: Path) -> None:
        assert self._tls is not None
        smtp, smtps, imap, imaps, smtp_plain = (_free_port() for _ in range(5))
        self._ports = (smtp, smtps, imap, imaps, smtp_plain)
        dovecot_dir = directory / "dovecot"
        run = dovecot_dir / "run"
        mail_user = pwd.getpwnam("mail")
        oauth2_mechanisms, oauth2_passdb = self._oauth2_conf(dovecot_dir)
        dovecot_conf = f"""\
# private Dovecot written by trionet.testing
instance_name = trionet-{uuid.uuid4().hex[:10]}
base_dir = {run}
state_dir = {dovecot_dir / "state"}
log_path = {dovecot_dir / "dovecot.log"}
protocols = imap lmtp
listen = {LOOPBACK}
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {mail_user.pw_uid}
first_valid_gid = {mail_user.pw_gid}

ssl = required
ssl_cert = <{self._tls.cert_file}
ssl_key = <{self._tls.key_file}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login{oauth2_mechanisms}
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%u {dovecot_dir / "users"}
}}
{oauth2_passdb}userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={directory / "mail"}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
}}

service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
protocol lmtp {{
  postmaster_address = postmaster@{self._domain}
}}
"""
        (dovecot_dir / "dovecot.conf").write_text(dovecot_conf)

        postfix_dir = directory / "postfix"
        main_cf = f"""\
# private Postfix written by trionet.testing
compatibility_level = 3.6
queue_directory = {postfix_dir / "spool"}
data_directory = {postfix_dir / "data"}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{self._domain}
mydomain = {self._domain}
myorigin = $mydomain
mydestination =
inet_interfaces = {LOOPBACK}
inet_protocols = ipv4
mynetworks =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_peername_lookup = no
maillog_file = {postfix_dir / "maillog"}
maillog_file_prefixes = {postfix_dir}
virtual_mailbox_domains = {self._domain}
virtual_transport = lmtp:unix:{run / "lmtp"}
smtpd_tls_cert_file = {self._tls.cert_file}
smtpd_tls_key_file = {self._tls.key_file}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {run / "auth-client"}
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_helo_required = yes
"""
        rows = [
            (f"{LOOPBACK}:{smtp}", "inet", "n", "-", "n", "-", "-", "smtpd"),
            (
                f"{LOOPBACK}:{smtps}", "inet", "n", "-", "n", "-", "-",
                "smtpd -o smtpd_tls_wrappermode=yes",
            ),
            (
                f"{LOOPBACK}:{smtp_plain}", "inet", "n", "-", "n", "-", "-",
                "smtpd -o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no",
            ),
            *_POSTFIX_SERVICES,
        ]
        master_cf = "".join(
            f"{name:<20} {kind:<10} " + " ".join(f"{col:<6}" for col in cols) + f" {command}\n"
            for name, kind, *cols, command in rows
        )
        (postfix_dir / "main.cf").write_text(main_cf)
        (postfix_dir / "master.cf").write_text(master_cf)
        # Postfix re-reads a config file younger than ~2 s in 300 ms steps before using it;
        # back-dating ours saves two seconds at every start.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(postfix_dir / name, (past, past))

        self._children = [
            _Child(
                "dovecot",
                [self._dovecot, "-F", "-c", str(dovecot_dir / "dovecot.conf")],
                cwd=directory,
                output_file=dovecot_dir / "dovecot.out",
                log_files=[dovecot_dir / "dovecot.log"],
                ready_ports=[imap, imaps],
                ready_paths=[run / "lmtp", run / "auth-client"],
            ),
            # master in the foreground (-s), not `postfix start-fg`, whose shell wrappers would
            # not pass our SIGTERM on
            _Child(
                "postfix",
                [self._postfix_master, "-c", str(postfix_dir), "-s"],
                cwd=directory,
                output_file=postfix_dir / "master.out",
                log_files=[postfix_dir / "maillog"],
                ready_ports=[smtp, smtps, smtp_plain],
                silent_failure_hint=(
                    "; Postfix reports start-up errors only to syslog, and "
                    f"`script -qc 'postfix -c {postfix_dir} check' /dev/null` shows "
                    "configuration errors"
                ),
            ),
        ]

    @staticmethod
    def _make_postfix_queue(postfix_dir: Path) -> None:
        """Create what ``postfix check`` would (per ``/etc/postfix/postfix-files``), in ~1 ms."""
        owner = pwd.getpwnam("postfix").pw_uid
        postdrop = grp.getgrnam("postdrop").gr_gid
        spool = postfix_dir / "spool"
        spool.chmod(0o755)
        for name in _POSTFIX_QUEUES:
            (spool / name).mkdir(mode=0o700)
            os.chown(spool / name, owner, -1)
        for name, mode in (("maildrop", 0o730), ("public", 0o710)):
            (spool / name).mkdir()
            (spool / name).chmod(mode)
            os.chown(spool / name, owner, postdrop)
        (spool / "pid").mkdir(mode=0o755)
        data = postfix_dir / "data"
        data.mkdir(mode=0o700)
        os.chown(data, owner, -1)

    def _publish(self, directory: Path) -> None:
        smtp, smtps, imap, imaps, smtp_plain = self._ports
        self._info = MailInfo(
            host=LOOPBACK,
            smtp_port=smtp,
            smtps_port=smtps,
            imap_port=imap,
            imaps_port=imaps,
            lmtp_socket=directory / "dovecot" / "run" / "lmtp",
            domain=self._domain,
            users=self._users,
            ca_file=directory / "ca.pem",
            mail_dir=directory / "mail",
            dovecot_log=directory / "dovecot" / "dovecot.log",
            postfix_log=directory / "postfix" / "maillog",
            smtp_plain_port=smtp_plain,
            oauth2_key=self._oauth2_key,
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt_hs256(claims: Mapping[str, object], key: bytes) -> str:
    """A JSON Web Token (RFC 7519) signed with HMAC-SHA256."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(dict(claims)).encode())
    signature = hmac.new(key, f"{header}.{body}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"


def _ssha512(password: str) -> str:
    """Dovecot's ``{SSHA512}`` scheme: base64(sha512(password + salt) + salt)."""
    salt = os.urandom(8)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode("ascii")
