"""The supervising process of ``trionet serve --workers N`` and ``trionet serve --reload``.

The supervisor binds the listening socket once and starts the serving processes (``trionet
serve ... --bind fd://N --control-fd M``), which inherit the socket and accept from it. Each
child gets one end of a socket pair: it writes ``ready`` once it serves, and when the
supervisor's end closes (the supervisor is gone, even killed) it shuts down gracefully. The
children run in their own session, so a terminal's Ctrl+C reaches only the supervisor, which
passes each SIGINT/SIGTERM on: the first one stops every child gracefully, a second one stops
them at once, and the exit status is the children's (128 + the signal number after a forced
stop). With HTTPS (``--certfile``), SIGHUP is passed on too: each child reads its certificate
files again. The supervisor waits for its children; any still running when it leaves (after a bug,
or past the shutdown deadline) are killed by PID and waited for.

Without ``--reload`` a child that ends by itself ends the whole server (the others are stopped
and its status is returned). With ``--reload`` a polling watcher looks at the ``.py`` files
under the watched directories every half second; a change restarts the children (stopped
gracefully, then started anew on the same socket), and a child that fails, e.g. on a syntax
error, is restarted at the next change.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..errors import ASGIError
from ._util import collapse_single_error

if TYPE_CHECKING:
    from ._cli import ServeOptions

__all__ = ["supervise"]

#: Seconds between two looks at the watched files.
POLL_INTERVAL = 0.5
#: At most this many files are watched (the walk stops there, with a warning).
MAX_WATCHED_FILES = 10_000
#: Directories never watched.
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})
#: Added to the children's own shutdown deadline before the supervisor kills a child.
_KILL_MARGIN = 5.0
_BACKLOG = 100


@dataclass(eq=False)
class _Child:
    process: trio.Process
    control: trio.socket.SocketType
    ready: bool = False


def _listen(bind: str) -> socket.socket:
    """Bind and listen on ``bind`` (what ``--bind`` accepts); the socket is inheritable."""
    if bind.startswith("fd://"):
        sock = socket.socket(fileno=int(bind[5:]))
    elif bind.startswith("unix:"):
        path = bind[5:]
        if os.path.exists(path) and not os.path.isfile(path):
            os.remove(path)  # a stale socket of an earlier server
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
    else:
        host, _, port = bind.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port or 8000)))
        except OSError:
            sock.close()
            raise
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, secure: bool) -> str:
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    return f"{'https' if secure else 'http'}://{host}:{address[1]}"


def _snapshot(directories: list[str]) -> dict[str, int]:
    """The modification times of the ``.py`` files under ``directories`` (bounded)."""
    found: dict[str, int] = {}
    for top in directories:
        for root, dirs, files in os.walk(top):
            dirs[:] = [
                d for d in dirs
                if not d.startswith(".") and d not in _SKIPPED_DIRS
                and not os.path.exists(os.path.join(root, d, "pyvenv.cfg"))
            ]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    try:
                        found[path] = os.stat(path).st_mtime_ns
                    except OSError:  # gone meanwhile
                        continue
                    if len(found) >= MAX_WATCHED_FILES:
                        return found
    return found


async def _watch_files(directories: list[str],
                       events: trio.MemorySendChannel[tuple[str, object]]) -> None:
    before = _snapshot(directories)
    if len(before) >= MAX_WATCHED_FILES:
        print(f"trionet: watching only the first {MAX_WATCHED_FILES} .py files for --reload "
              "(use --reload-dir to choose the directories)", file=sys.stderr)
    while True:
        await trio.sleep(POLL_INTERVAL)
        now = _snapshot(directories)
        if now != before:
            changed = sorted(
                path for path in now.keys() | before.keys() if now.get(path) != before.get(path)
            )
            before = now
            await events.send(("change", changed[0]))


async def _forward_signals(signals: AsyncIterator[int],
                           events: trio.MemorySendChannel[tuple[str, object]]) -> None:
    async for signum in signals:
        await events.send(("signal", signal.Signals(signum)))


async def _follow(child: _Child, events: trio.MemorySendChannel[tuple[str, object]]) -> None:
    """Report the child's readiness, then its exit."""
    if await child.control.recv(64):
        child.ready = True
        await events.send(("ready", child))
    await child.process.wait()
    await events.send(("exit", child))


async def _kill_after(child: _Child, seconds: float) -> None:
    await trio.sleep(seconds)
    if child.process.returncode is None:
        print(f"trionet: worker {child.process.pid} did not stop in time, killing it",
              file=sys.stderr)
        child.process.kill()


async def _supervise(opts: ServeOptions, sock: socket.socket, url: str) -> int:
    from ._cli import SHUTDOWN_TIMEOUT

    command = [sys.executable, *(f"-W{option}" for option in sys.warnoptions),
               "-m", "trionet", "serve"]
    kill_delay = opts.graceful_timeout + SHUTDOWN_TIMEOUT + _KILL_MARGIN
    directories = opts.reload_dirs or [os.getcwd()]
    live: list[_Child] = []
    events_send, events = trio.open_memory_channel[tuple[str, object]](math.inf)
    mode = f"{opts.workers} worker process{'es' if opts.workers > 1 else ''}"
    if opts.reload:
        mode += ", reloading on changes"

    async def spawn(nursery: trio.Nursery) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                [*command, *opts.child_arguments(f"fd://{sock.fileno()}", child_end.fileno())],
                pass_fds=(sock.fileno(), child_end.fileno()),
                start_new_session=True,  # a terminal's Ctrl+C reaches the supervisor only
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        child = _Child(process, trio.socket.from_stdlib_socket(parent_end))
        live.append(child)
        nursery.start_soon(_follow, child, events_send)

    async def stop_all(nursery: trio.Nursery, signum: signal.Signals, *, deadline: bool
                       ) -> None:
        # Through the control socket, in order: two signals sent at once would reach the
        # child's signal receiver as one.
        for child in live:
            if child.process.returncode is None:
                with contextlib.suppress(OSError):
                    await child.control.send(f"signal {int(signum)}\n".encode())
                if deadline:
                    nursery.start_soon(_kill_after, child, kill_delay)

    user_signals = 0
    forced: signal.Signals | None = None
    status = 0
    state = "starting"  # starting, running, restarting, crashed (--reload), stopping
    announced = False
    try:
        # With HTTPS, SIGHUP is passed on: each child reads its certificate files again.
        handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if opts.certfile else [])
        with trio.open_signal_receiver(*handled) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_forward_signals, signals, events_send)
                if opts.reload:
                    nursery.start_soon(_watch_files, directories, events_send)
                await spawn(nursery)
                async for kind, value in events:
                    if kind == "ready":
                        if state != "starting":
                            continue
                        if len(live) < opts.workers:  # the first one is up: start the rest
                            for _ in range(opts.workers - len(live)):
                                await spawn(nursery)
                        elif all(child.ready for child in live):
                            state = "running"
                            if not announced:
                                print(f"trionet: serving {opts.app} on {url} (Ctrl+C to stop; "
                                      f"{mode})", file=sys.stderr)
                                announced = True
                            else:
                                print(f"trionet: restarted {mode}", file=sys.stderr)
                    elif kind == "exit":
                        child = value
                        assert isinstance(child, _Child)
                        live.remove(child)
                        child.control.close()
                        code = child.process.returncode
                        assert code is not None
                        if state in ("starting", "running"):
                            # A child ended by itself (failed to start, crashed...).
                            if opts.reload:
                                print(f"trionet: worker {child.process.pid} exited with "
                                      f"status {code}; restarting at the next change",
                                      file=sys.stderr)
                                state = "crashed"
                            else:
                                status = code or 1
                                state = "stopping"
                            await stop_all(nursery, signal.SIGTERM, deadline=True)
                        if not live:
                            if state == "stopping":
                                break
                            if state == "restarting":
                                state = "starting"
                                await spawn(nursery)
                    elif kind == "signal" and value == signal.SIGHUP:
                        # Not a stop: the children reload their certificates.
                        await stop_all(nursery, signal.SIGHUP, deadline=False)
                    elif kind == "signal":
                        assert isinstance(value, signal.Signals)
                        user_signals += 1
                        if user_signals == 1:
                            print(f"trionet: {value.name} received, shutting down "
                                  f"{len(live)} worker(s) (again to stop at once)",
                                  file=sys.stderr)
                            state = "stopping"
                            await stop_all(nursery, value, deadline=True)
                            if not live:
                                break
                        elif user_signals == 2:
                            print(f"trionet: {value.name} received again, stopping at once",
                                  file=sys.stderr)
                            forced = value
                            await stop_all(nursery, value, deadline=False)
                    elif kind == "change" and state != "stopping":
                        print(f"trionet: {value} changed, restarting", file=sys.stderr)
                        if live:
                            state = "restarting"
                            await stop_all(nursery, signal.SIGTERM, deadline=True)
                        else:
                            state = "starting"
                            await spawn(nursery)
                nursery.cancel_scope.cancel()  # the watcher, the signal forwarder, deadlines
    finally:
        with trio.CancelScope(shield=True):
            for child in live:  # only after a failure of the supervisor itself
                if child.process.returncode is None:
                    child.process.kill()
                await child.process.wait()
                child.control.close()
    return 128 + forced if forced is not None else status


def supervise(opts: ServeOptions) -> int:
    """Bind ``opts.bind`` and run ``opts.workers`` serving processes on it until a signal
    (restarting them on file changes with ``opts.reload``); returns the exit status."""
    try:
        sock = _listen(opts.bind)
    except OSError as exc:
        raise ASGIError(f"cannot listen on {opts.bind}: {exc}", fault="local") from exc
    with sock, collapse_single_error():
        status: int = trio.run(_supervise, opts, sock, _url(sock, opts.certfile is not None))
    return status
