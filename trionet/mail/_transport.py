"""What the SMTP and IMAP clients share: opening the TCP connection from trio, TLS settings, SASL
initial responses, and the per-connection call discipline (one blocking call at a time, on a
worker thread, interrupted by cancellation).
"""

from __future__ import annotations

import base64
import errno
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from .._threads import SocketInterrupter, run_blocking
from ..errors import ConfigurationError, MailError
from ._errors import InsecureAuthError

if TYPE_CHECKING:
    from ._oauth import TokenCache

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_GREETING_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "Address",
    "check_credential",
    "check_timeout",
    "default_ssl_context",
    "greeting_wait",
    "insecure_auth_error",
    "no_greeting_message",
    "open_tcp_socket",
    "plain_initial_response",
    "run_interruptible",
    "xoauth2_bytes",
    "xoauth2_initial_response",
]

T = TypeVar("T")

#: A ``(host, port)`` pair for a local address to connect from.
Address = tuple[str, int]

#: Default bound on every blocking socket operation (a backstop: trio deadlines and cancellation
#: interrupt a call long before this).
DEFAULT_SOCKET_TIMEOUT: Final = 60.0

#: Default bound on the wait for the server's greeting (and, with implicit TLS, the handshake
#: before it). Mail servers greet at once; a server that says nothing is usually one that expects
#: the client to start a TLS handshake first (implicit TLS on a port other than 465 / 993).
DEFAULT_GREETING_TIMEOUT: Final = 15.0

#: How long a polite goodbye (QUIT, LOGOUT, IDLE's DONE) may take when closing.
CLOSE_TIMEOUT: Final = 5.0


def default_ssl_context() -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name (system CAs)."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


async def open_tcp_socket(
    host: str,
    port: int,
    *,
    source_address: Address | None,
    socket_timeout: float | None,
) -> socket.socket:
    """Resolve ``host`` and connect a plain blocking socket to it, waiting in trio.

    The name is resolved on a worker thread (waited for, never abandoned); the TCP handshake
    happens on a non-blocking socket that trio waits on, so a deadline or cancellation ends it at
    once. The socket is returned in blocking mode with ``socket_timeout``, ready for smtplib or
    imaplib.

    Raises:
        OSError: the name could not be resolved, or no address accepted the connection.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be an int in 1..65535, not {port!r}")
    infos = await run_blocking(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if source_address is not None:
                sock.bind(source_address)
            try:
                sock.connect(sockaddr)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, f"{os.strerror(code)} ({host}:{port})") from None
            sock.settimeout(socket_timeout)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error if error is not None else OSError(
        errno.EADDRNOTAVAIL, f"no address found for {host!r}"
    )


async def run_interruptible(
    interrupter: SocketInterrupter, fn: Callable[..., T], *args: Any, grace: float = 0.0
) -> T:
    """Run a blocking call of a connection on a worker thread; cancellation interrupts it.

    If the caller is cancelled (a trio deadline, a cancelled nursery) while ``fn`` blocks, the
    connection's socket is shut down so that ``fn`` returns at once (with ``grace``: once ``fn``
    has had that many seconds to finish by itself); then :class:`trio.Cancelled` propagates.
    The connection cannot be used after it was shut down (``interrupter.interrupted``).
    """
    return await run_blocking(fn, *args, on_cancel=interrupter.interrupt, grace=grace)


def plain_initial_response(username: str, password: str) -> str:
    """The SASL PLAIN initial response (RFC 4616), base64 of ``\\0user\\0password`` in UTF-8."""
    raw = b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def xoauth2_bytes(username: str, access_token: str) -> bytes:
    """The SASL XOAUTH2 client response (Google's and Microsoft's OAuth 2.0 mechanism):
    ``"user=" user "\\x01auth=Bearer " token "\\x01\\x01"``."""
    return f"user={username}\x01auth=Bearer {access_token}\x01\x01".encode()


def xoauth2_initial_response(username: str, access_token: str) -> str:
    """:func:`xoauth2_bytes`, base64-encoded, as sent after ``AUTH XOAUTH2``."""
    return base64.b64encode(xoauth2_bytes(username, access_token)).decode("ascii")


def check_timeout(value: float | None, what: str) -> float | None:
    """Refuse a timeout that is not a positive number (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{what} must be a positive number or None, not {value!r}")
    return float(value)


def greeting_wait(socket_timeout: float | None, greeting_timeout: float | None) -> float | None:
    """The socket timeout while waiting for the greeting: the smaller of the two limits."""
    limits = [t for t in (socket_timeout, greeting_timeout) if t is not None]
    return min(limits) if limits else None


def no_greeting_message(
    protocol: str, host: str, port: int, *, implicit_tls: bool, seconds: float | None,
    implicit_port: int,
) -> str:
    """Why a connection got no greeting, and what to do about it."""
    within = f"within {seconds:g} s" if seconds is not None else "before the timeout"
    if implicit_tls:
        return (f"no greeting from the {protocol} server {host}:{port} {within} (TLS handshake "
                f"and greeting)")
    return (
        f"no greeting from the {protocol} server {host}:{port} {within}: the server may expect "
        f"implicit TLS (as on port {implicit_port}); pass use_tls=True to connect()"
    )


def insecure_auth_error(
    protocol: str, client: str, host: str, port: int, reason: str
) -> InsecureAuthError:
    """The error for a login refused because the connection is not encrypted."""
    return InsecureAuthError(
        f"refusing to send credentials over an unencrypted {protocol} connection to "
        f"{host}:{port} ({reason}): anyone on the path could read them. Connect with TLS "
        f"(use_tls=True, or start_tls=True to require STARTTLS), or, on a trusted network only "
        f"(loopback development), create the client with {client}(allow_insecure_auth=True)"
    )


def check_credential(value: object, what: str) -> str:
    """Refuse credentials that are not strings or that contain line breaks or NUL."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str, not {type(value).__name__}")
    if any(ch in value for ch in "\r\n\0"):
        raise ConfigurationError(f"{what} must not contain line breaks or NUL")
    return value


@dataclass(frozen=True)
class ConnectParams:
    """What ``connect()`` was given, kept so that a dropped connection can be reopened."""

    host: str
    port: int
    implicit_tls: bool
    start_tls: bool | None
    ssl_context: ssl.SSLContext | None
    source_address: Address | None


@dataclass(frozen=True)
class Credentials:
    """What ``login()`` was given, kept to log in again after a reconnection (``tokens``: the
    OAuth 2.0 token source; then ``secret`` is unused)."""

    mechanism: str | None
    username: str
    secret: str
    tokens: TokenCache | None = None


ConnT = TypeVar("ConnT")


async def open_connection(
    params: ConnectParams,
    *,
    socket_timeout: float | None,
    protocol: str,
    error: type[MailError],
    build: Callable[[socket.socket, SocketInterrupter, ssl.SSLContext | None], ConnT],
    start: Callable[[ConnT, ssl.SSLContext | None], None],
    close: Callable[[ConnT], None],
    translate: Callable[[Callable[[], None]], Callable[[], None]],
) -> ConnT:
    """Open a mail connection: a TCP connect from trio, then, on a worker thread (interrupted
    if the caller is cancelled), ``build(sock, interrupter, implicit_tls_context)`` makes the
    blocking client object and ``start(conn, context)`` opens its session (greeting, STARTTLS).

    ``implicit_tls_context`` is None unless ``params.implicit_tls``; *context* is
    ``params.ssl_context``, or the default verified context for implicit TLS. If anything fails,
    the connection is closed with ``close(conn)`` and the socket is closed.

    Raises:
        error: (the protocol's connection error) if the TCP connect fails; errors of *build* and
            *start* as *translate* maps them.
    """
    try:
        sock = await open_tcp_socket(
            params.host, params.port, source_address=params.source_address,
            socket_timeout=socket_timeout,
        )
    except OSError as exc:
        raise error(
            f"cannot connect to the {protocol} server {params.host}:{params.port}: {exc}"
        ) from exc
    interrupter = SocketInterrupter()
    interrupter.attach(sock)
    made: list[ConnT] = []

    def job() -> None:
        context = params.ssl_context
        if params.implicit_tls and context is None:
            context = default_ssl_context()
        conn = build(sock, interrupter, context if params.implicit_tls else None)
        made.append(conn)
        start(conn, context)

    try:
        await run_interruptible(interrupter, translate(job))
    except BaseException:
        for conn in made:
            close(conn)
        sock.close()
        raise
    return made[0]
