"""The session plumbing the SMTP and IMAP clients share.

The blocking side (worker threads): :class:`TLSConnection`, the TLS state and handshake of a
blocking protocol connection (``smtplib.SMTP`` / ``imaplib.IMAP4`` underneath), and
:class:`MailProtocol`, which says how the library's and the socket's errors become trionet's.

The trio side: :class:`MailSession`, one connection at a time behind a :class:`trio.Lock`,
opened with :func:`~trionet.mail._transport.open_connection`, reopened (and logged in again)
after it was lost, and closed with a bounded goodbye. Each client subclasses it and adds its
protocol's commands.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import trio

from .. import tracing as _tracing
from .._threads import SocketInterrupter
from .._tls import PLAINTEXT_REASONS
from ..errors import ConfigurationError, MailError
from ..tls import TLSArgument, client_context
from ._errors import MailAuthenticationError, MailNotConnected
from ._oauth import TokenCache, server_refused
from ._transport import (
    CLOSE_TIMEOUT,
    Address,
    ConnectParams,
    Credentials,
    check_credential,
    check_timeout,
    default_ssl_context,
    greeting_wait,
    insecure_auth_error,
    no_greeting_message,
    open_connection,
    run_interruptible,
)

__all__ = [
    "MailProtocol",
    "MailSession",
    "SessionConnection",
    "TLSConnection",
    "Transport",
    "transport_error",
]

logger = logging.getLogger("trionet.mail")

T = TypeVar("T")

#: The command a blocking call sends, for its span's name (trionet.tracing).
_SPAN_NAMES = {
    "authenticate_with": "AUTHENTICATE", "ping": "NOOP", "select_mailbox": "SELECT",
    "search_uids": "UID SEARCH", "fetch_uids": "UID FETCH", "fetch_matching": "UID FETCH",
    "copy_uids": "UID COPY", "move_uids": "UID MOVE", "store_flags": "UID STORE",
    "list_boxes": "LIST", "idle_start": "IDLE", "idle_read": "IDLE", "idle_done": "DONE",
}

# -- the blocking side (runs on worker threads) -------------------------------------------------


@dataclass(frozen=True)
class MailProtocol:
    """What sets SMTP and IMAP apart in the plumbing they share.

    Attributes:
        name: ``"SMTP"`` or ``"IMAP"``.
        client: the client class's name, for messages.
        implicit_tls_port: the port where TLS starts with the first byte (465, 993).
        connection_error: the protocol's connection error; it drops the connection.
        protocol_error: the protocol's "out of step with the server" error; it drops the
            connection too.
        library_error: maps an error of the protocol's library (smtplib, imaplib) to
            trionet's (None: not one of them); asked before the socket's and TLS's errors.
    """

    name: str
    client: str
    implicit_tls_port: int
    connection_error: type[MailError]
    protocol_error: type[MailError]
    library_error: Callable[[Exception], MailError | None]

    def mail_error(self, exc: Exception) -> MailError | None:
        """trionet's error for an error of the library, the socket or TLS (None: let it
        pass)."""
        error = self.library_error(exc)
        return error if error is not None else transport_error(exc, self)

    def translate(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Wrap the blocking call ``fn`` so that the errors :meth:`mail_error` maps become
        trionet's (raised ``from`` the original); trionet's own errors and unmapped ones pass
        unchanged."""
        mail_error = self.mail_error

        def call(*args: Any) -> T:
            try:
                return fn(*args)
            except MailError:
                raise
            except Exception as exc:
                error = mail_error(exc)
                if error is None:
                    raise
                raise error from exc

        return call


def transport_error(exc: Exception, protocol: MailProtocol) -> MailError | None:
    """The protocol's connection error for a failure of the socket or of TLS, or None for an
    exception that is neither."""
    error = protocol.connection_error
    name = protocol.name
    if isinstance(exc, ssl.SSLCertVerificationError):
        return error(f"the {name} server's TLS certificate was refused: {exc.verify_message}")
    if isinstance(exc, TimeoutError):
        return error(f"the {name} server did not answer within socket_timeout")
    if isinstance(exc, ssl.SSLError) and exc.reason in PLAINTEXT_REASONS:
        return error(
            f"the {name} server does not speak TLS on this port (it answered the TLS "
            "handshake in plain text): leave use_tls off there, or connect to its "
            f"implicit-TLS port (usually {protocol.implicit_tls_port})"
        )
    if isinstance(exc, OSError):  # ssl.SSLError included
        return error(f"{name} connection failed: {exc}")
    return None


@dataclass(frozen=True)
class Transport:
    """A socket that trio connected, and the settings of the blocking connection made on it.

    Attributes:
        sock: the connected socket, in blocking mode.
        interrupter: shuts ``sock`` (and the TLS socket that replaces it) down on cancellation.
        implicit_tls: the context for TLS from the first byte, or None (plain, perhaps
            STARTTLS later).
        socket_timeout: the bound on each blocking socket operation (None: none).
        greeting_timeout: the bound on the wait for the greeting (None: socket_timeout's).
        allow_insecure_auth: whether credentials may go over a plain connection.
    """

    sock: socket.socket
    interrupter: SocketInterrupter
    implicit_tls: ssl.SSLContext | None
    socket_timeout: float | None
    greeting_timeout: float | None
    allow_insecure_auth: bool


class TLSConnection:
    """The TLS state of a blocking protocol connection (a mixin before ``smtplib.SMTP`` or
    ``imaplib.IMAP4``): whether it is encrypted, why not, and the handshake itself.

    Attributes:
        interrupter: shuts the connection's socket down when a call on it is cancelled.
        tls: whether the connection is encrypted (implicit TLS or STARTTLS).
        plain_reason: why it is not (for :func:`insecure_auth_error`).
    """

    _protocol: ClassVar[MailProtocol]
    interrupter: SocketInterrupter
    socket_timeout: float | None
    tls: bool
    plain_reason: str

    def _init_transport(self, transport: Transport) -> None:
        """Called first by the connection's ``__init__``."""
        self._connected_sock = transport.sock
        self.interrupter = transport.interrupter
        self._implicit_tls = transport.implicit_tls
        self.socket_timeout = transport.socket_timeout
        self._greeting_timeout = transport.greeting_timeout
        self._allow_insecure_auth = transport.allow_insecure_auth
        self.tls = False
        self.plain_reason = "the connection has not been set up"

    def _greeting_wait(self) -> float | None:
        """The socket timeout while waiting for the greeting."""
        return greeting_wait(self.socket_timeout, self._greeting_timeout)

    def _no_greeting(self, host: str, port: int, seconds: float | None) -> MailError:
        """The connection error for a server that sent no greeting within ``seconds``."""
        protocol = self._protocol
        return protocol.connection_error(no_greeting_message(
            protocol.name, host, port, implicit_tls=self._implicit_tls is not None,
            seconds=seconds, implicit_port=protocol.implicit_tls_port,
        ))

    def _check_secure(self, host: str, port: int) -> None:
        """Refuse to send credentials over a plain connection (unless allowed).

        Raises:
            InsecureAuthError: the connection is not encrypted and the client was not made
                with ``allow_insecure_auth=True``.
        """
        if not self.tls and not self._allow_insecure_auth:
            protocol = self._protocol
            raise insecure_auth_error(
                protocol.name, protocol.client, host, port, self.plain_reason
            )

    def _start_tls(
        self, sock: socket.socket, context: ssl.SSLContext | None, host: str
    ) -> ssl.SSLSocket:
        """The TLS upgrade after a STARTTLS reply (default context: verified)."""
        return self._wrap(context or default_ssl_context(), sock, host)

    def _wrap(self, context: ssl.SSLContext, sock: socket.socket, host: str) -> ssl.SSLSocket:
        """Wrap ``sock`` in TLS and do the handshake (the interrupter follows the new socket)."""
        wrapped = self.interrupter.replace(
            lambda: context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        )
        try:
            wrapped.do_handshake()
        except BaseException:
            wrapped.close()
            raise
        self.tls = True
        return wrapped

    def _wants_starttls(self, start_tls: bool | None, offered: bool) -> bool:
        """Whether to upgrade with STARTTLS now (``offered``: the server announced it).

        Raises:
            MailConnectionError: (the protocol's) STARTTLS was required (``start_tls=True``)
                and the server does not offer it.
        """
        if self.tls or start_tls is False:
            if not self.tls:
                self.plain_reason = "connect() was called with start_tls=False"
            return False
        if not offered:
            if start_tls:
                raise self._protocol.connection_error(
                    f"the {self._protocol.name} server does not offer STARTTLS"
                )
            self.plain_reason = (
                "the server did not offer STARTTLS, or something on the path removed it"
            )
            return False
        return True


class SessionConnection(Protocol):
    """What :class:`MailSession` needs of a protocol's blocking connection."""

    interrupter: SocketInterrupter
    tls: bool

    def authenticate_with(self, mechanism: str | None, username: str, secret: str) -> str:
        """Log in; returns the mechanism used."""
        ...

    def open_session(self, params: ConnectParams, context: ssl.SSLContext | None) -> None:
        """Read the greeting and set up TLS (STARTTLS with ``context``) as ``params`` say."""
        ...

    def goodbye(self) -> None:
        """Say goodbye (QUIT, LOGOUT) and close the connection."""
        ...

    def discard(self) -> None:
        """Close the socket without a word to the server."""
        ...


ConnT = TypeVar("ConnT", bound=SessionConnection)


# -- the trio side ------------------------------------------------------------------------------


class MailSession(Generic[ConnT]):
    """One mail connection at a time, driven from trio (the base of both mail clients).

    Exactly one blocking call of the connection runs at a time (``self._lock``), on a worker
    thread; a cancelled call shuts the socket down and the connection is dropped. After a lost
    connection, :meth:`_ensure_connected` opens a new one with the last ``connect()``
    arguments and logs in again with the last credentials.

    A subclass sets ``_protocol`` and implements :meth:`_build`;
    :meth:`_forget` and :meth:`_restore` carry its own session state (IMAP's selected mailbox).
    """

    _protocol: ClassVar[MailProtocol]

    def __init__(
        self,
        *,
        socket_timeout: float | None,
        greeting_timeout: float | None,
        allow_insecure_auth: bool,
    ) -> None:
        socket_timeout = check_timeout(socket_timeout, "socket_timeout")
        greeting_timeout = check_timeout(greeting_timeout, "greeting_timeout")
        if not isinstance(allow_insecure_auth, bool):
            raise ConfigurationError(
                f"allow_insecure_auth must be a bool, not {type(allow_insecure_auth).__name__}"
            )
        self._socket_timeout = socket_timeout
        self._greeting_timeout = greeting_timeout
        self._allow_insecure_auth = allow_insecure_auth
        self._lock = trio.Lock()
        self._conn: ConnT | None = None
        self._params: ConnectParams | None = None
        self._credentials: Credentials | None = None
        self._connections = 0
        self._reconnects = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- what each protocol provides -------------------------------------------------------------

    def _build(self, transport: Transport, params: ConnectParams) -> ConnT:
        """The protocol's blocking connection on ``transport`` (runs on a worker thread)."""
        raise NotImplementedError

    def _forget(self) -> None:
        """Forget the protocol's session state (connect() and aclose() call it)."""

    async def _restore(self, conn: ConnT) -> None:
        """Restore the protocol's session state after a login on a new connection."""

    # -- properties ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._conn is not None

    @property
    def username(self) -> str | None:
        """The user name of the last successful login (None before)."""
        return self._credentials.username if self._credentials is not None else None

    @property
    def tls(self) -> bool:
        """Whether the current connection is encrypted (implicit TLS or STARTTLS)."""
        return self._conn is not None and self._conn.tls

    # -- connection ------------------------------------------------------------------------------

    async def connect(
        self,
        host: str,
        port: int,
        *,
        use_tls: bool | None = None,
        start_tls: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        source_address: Address | None = None,
        tls: TLSArgument = None,
    ) -> None:
        """Connect, read the greeting (SMTP: and say EHLO) and set up TLS.

        Args:
            host: the server's name or address.
            port: for SMTP 587 (submission, STARTTLS; the default), 465 (implicit TLS) or 25;
                for IMAP 993 (implicit TLS; the default) or 143 (STARTTLS).
            use_tls: implicit TLS from the first byte; default: only on port 465 (SMTP) or 993
                (IMAP).
            start_tls: upgrade with STARTTLS: None (default) when the server offers it, True to
                require it, False never.
            ssl_context: the TLS settings; default: :func:`ssl.create_default_context`, which
                verifies the certificate and the host name against the system's CAs.
            source_address: a local ``(address, port)`` to connect from.
            tls: the TLS settings in the ``tls=`` vocabulary of :mod:`trionet.tls`, instead of
                ``ssl_context``: a :class:`~trionet.tls.TLSOptions` (a private CA, a client
                certificate), an :class:`ssl.SSLContext`, True or None (the system's CAs), or
                False for no TLS at all (``start_tls=False``, no implicit TLS).

        Calling it again closes the current connection first.

        Raises:
            SMTPConnectionError: (:exc:`IMAPConnectionError` for IMAP) the server could not be
                reached, refused the connection (SMTP) or greeted with BYE (IMAP), sent no
                greeting within ``greeting_timeout`` (it may expect implicit TLS: pass
                ``use_tls=True``), the TLS handshake failed (an untrusted certificate: see
                ``__cause__``), or STARTTLS was required and not offered.
            SMTPResponseError: the SMTP server refused STARTTLS.
        """
        check_credential(host, "host")
        if tls is not None:
            if ssl_context is not None:
                raise ConfigurationError("give connect() tls= or ssl_context=, not both")
            if tls is False:
                if use_tls or start_tls:
                    raise ConfigurationError("tls=False excludes use_tls and start_tls")
                use_tls, start_tls = False, False
            else:
                ssl_context = client_context(tls, what="tls")
        implicit = port == self._protocol.implicit_tls_port if use_tls is None else bool(use_tls)
        if implicit and start_tls:
            raise ConfigurationError("use_tls (implicit TLS) and start_tls exclude each other")
        params = ConnectParams(host, port, implicit, start_tls, ssl_context, source_address)
        async with self._lock:
            self._drop()
            self._params = None
            self._credentials = None
            self._forget()
            self._conn = await self._open(params)
            self._params = params

    async def _open(self, params: ConnectParams) -> ConnT:
        conn = await open_connection(
            params,
            socket_timeout=self._socket_timeout,
            protocol=self._protocol.name,
            error=self._protocol.connection_error,
            build=lambda sock, interrupter, implicit_tls: self._build(
                Transport(sock, interrupter, implicit_tls, self._socket_timeout,
                          self._greeting_timeout, self._allow_insecure_auth),
                params,
            ),
            start=lambda conn, context: conn.open_session(params, context),
            close=lambda conn: conn.discard(),
            translate=self._translate,
        )
        self._connections += 1
        return conn

    def _translate(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` with the library's errors turned into the protocol's trionet errors."""
        return self._protocol.translate(fn)

    def _drop(self) -> None:
        """Forget the current connection, closing its socket (no goodbye)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.discard()

    def _not_connected(self) -> MailNotConnected:
        return MailNotConnected(
            f"the {self._protocol.name} client is not connected; call connect() first"
        )

    async def _call(self, fn: Callable[..., T], *args: Any, grace: float = 0.0,
                    traced: bool = True) -> T:
        """Run a method of the current connection on a worker thread (lock held), in a
        ``CLIENT`` span named after it while tracing is on (unless not *traced*).

        A cancellation shuts the socket down (after ``grace`` seconds if the call is still
        running then) and drops the connection; a call that finished within ``grace`` leaves
        the connection as it is, and :class:`trio.Cancelled` is raised all the same.
        """
        conn = self._conn
        if conn is None:
            raise self._not_connected()
        span = self._span(fn, args) if traced and _tracing.enabled() else None
        with _tracing.ending(span):
            try:
                return await run_interruptible(
                    conn.interrupter, self._translate(fn), *args, grace=grace
                )
            except (self._protocol.connection_error, self._protocol.protocol_error):
                self._drop()  # lost, or out of step with the server: a new connection next
                raise
            except trio.Cancelled:
                if conn.interrupter.interrupted:  # cut short: the session is unusable
                    self._drop()
                raise

    def _span(self, operation: object, args: tuple[Any, ...] = ()) -> _tracing.Span | None:
        """A ``CLIENT`` span for *operation* (a command, or the blocking call that sends one
        with *args*) on the server (trionet.tracing); nothing goes into the mail itself (there
        is no standard header for a trace context in mail)."""
        if not isinstance(operation, str):
            name = getattr(operation, "__name__", "call")
            if name == "mailbox_command" and len(args) > 1:
                operation = str(args[1])  # (conn, "CREATE", mailbox)
            else:
                operation = _SPAN_NAMES.get(name, name)
        protocol = self._protocol.name
        attributes: dict[str, _tracing.AttributeValue] = {
            "network.protocol.name": protocol.lower(), "network.transport": "tcp"}
        params = self._params
        if params is not None:
            attributes["server.address"] = params.host
            attributes["server.port"] = params.port
        return _tracing.start_span(f"{protocol} {operation}", "client", attributes)

    async def _ensure_connected(self, *, login: bool = True) -> ConnT:
        """The current connection; after a lost one, connect and (with ``login``) log in and
        restore the session again (lock held)."""
        if self._conn is not None:
            return self._conn
        params = self._params
        if params is None:
            raise self._not_connected()
        conn = self._conn = await self._open(params)
        self._reconnects += 1
        logger.info(
            "reconnected to the %s server %s:%s", self._protocol.name, params.host, params.port
        )
        credentials = self._credentials
        if credentials is not None and login:
            try:
                await self._authenticate(conn, credentials)
                await self._restore(conn)
            except MailError:
                self._drop()  # not logged in (e.g. InsecureAuthError): do not use it as is
                raise
        return conn

    async def _login(self, mechanism: str | None, username: str, secret: str,
                     tokens: TokenCache | None = None) -> None:
        """Log in once with ``mechanism`` (None: the protocol's default) and remember the
        credentials for reconnections (with ``tokens``, the secret is an OAuth 2.0 token
        from it)."""
        check_credential(username, "username")
        check_credential(secret, "password")
        async with self._lock:
            # after a lost connection: reconnect, but log in with the new credentials only
            conn = await self._ensure_connected(login=False)
            credentials = Credentials(mechanism, username, secret, tokens)
            used = await self._authenticate(conn, credentials)
            self._credentials = Credentials(used, username, secret, tokens)
            await self._restore(conn)

    async def _authenticate(self, conn: ConnT, credentials: Credentials) -> str:
        """Log in on ``conn``; returns the mechanism used. With a token source: its token, and
        if the server refuses it, once more with a new one."""
        tokens = credentials.tokens
        mechanism, username = credentials.mechanism, credentials.username
        if tokens is None:
            return await self._call(conn.authenticate_with, mechanism, username,
                                    credentials.secret)
        token = await tokens.token()
        try:
            return await self._call(conn.authenticate_with, mechanism, username, token)
        except MailAuthenticationError as exc:
            if not server_refused(exc):
                raise
            logger.info("the %s server refused the OAuth 2.0 token (%s); fetching a new one",
                        self._protocol.name, exc)
        tokens.invalidate()
        token = await tokens.token()
        return await self._call(conn.authenticate_with, mechanism, username, token)

    # -- closing ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Say goodbye to the server (``QUIT``, ``LOGOUT``; bounded to a few seconds, even when
        cancelled) and close the connection.

        A call running in another task at that moment is interrupted.
        """
        if self._lock.locked() and self._conn is not None:
            self._conn.interrupter.interrupt()
        with trio.CancelScope(shield=True):
            async with self._lock:
                conn, self._conn = self._conn, None
                self._params = None
                self._forget()
                if conn is None:
                    return
                # errors do not matter: the connection is going away anyway
                with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(MailError):
                    await run_interruptible(conn.interrupter, self._translate(conn.goodbye))
                conn.discard()

