"""AsyncIMAPClient: imaplib on a worker thread, driven from trio.

Each connection is one ``imaplib.IMAP4`` object whose socket trio connected. A :class:`trio.Lock`
lets exactly one blocking imaplib call run at a time, on a worker thread; if the calling task is
cancelled, the socket is shut down so that the call returns at once, and the connection is
closed (the next call connects, logs in and selects the mailbox again).

The client reads the socket through its own small buffer instead of imaplib's ``makefile``
reader, so that IDLE can wait for the server *in trio* (``trio.lowlevel.wait_readable``, no
thread, cancellable) and know when a response has already been buffered; a read that times out
loses nothing.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import imaplib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from ..errors import ConfigurationError, MailError
from ..tls import TLSArgument
from ._errors import (
    IMAPAuthenticationError,
    IMAPCommandError,
    IMAPConnectionError,
    IMAPProtocolError,
    MailMessageError,
)
from ._imap_protocol import (
    IdleEvent,
    IdleKind,
    MailboxInfo,
    MailboxStatus,
    encode_mailbox_name,
    format_uid_set,
    parse_fetch_responses,
    parse_list_response,
    parse_uid_set,
    quote_string,
    split_response_code,
)
from ._message import MailMessage
from ._oauth import TokenCache, TokenProvider, oauthbearer_bytes
from ._session import MailProtocol, MailSession, TLSConnection, Transport
from ._transport import (
    CLOSE_TIMEOUT,
    DEFAULT_GREETING_TIMEOUT,
    DEFAULT_SOCKET_TIMEOUT,
    Address,
    ConnectParams,
    check_credential,
    xoauth2_bytes,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["AsyncIMAPClient", "IMAPStatistics"]

logger = logging.getLogger("trionet.mail")

T = TypeVar("T")

#: Default limits on what one response from the server may make the client hold in memory.
DEFAULT_MAX_LINE_LENGTH: Final = 1 << 20  # 1 MiB
DEFAULT_MAX_LITERAL_SIZE: Final = 64 << 20  # 64 MiB
DEFAULT_MAX_RESPONSE_SIZE: Final = 256 << 20  # 256 MiB
DEFAULT_MAX_RESPONSE_LINES: Final = 1_000_000
_COMPACT_AT: Final = 1 << 16
_MAX_PENDING_EVENTS: Final = 1000
# How long IDLE waits for the rest of a response once the socket became readable; readable
# with no application data (a TLS-level record) then simply means "wait again".
_IDLE_POLL: Final = 1.0
# Reconnection after BYE / a dropped connection while idling: waits before each attempt.
_RECONNECT_DELAYS: Final = (0.0, 0.5, 1.0, 2.0, 4.0)
_FLAG_RE: Final = re.compile(r"\\?[!#$&'+-.0-9:<-Z^-z|~]+")


@dataclass(frozen=True)
class _Limits:
    """Bounds on one response (see :class:`AsyncIMAPClient`)."""

    max_line_length: int
    max_literal_size: int
    max_response_size: int
    max_response_lines: int


@dataclass(frozen=True)
class IMAPStatistics:
    """Counters of an :class:`AsyncIMAPClient` (see :meth:`AsyncIMAPClient.statistics`).

    Attributes:
        connections: TCP connections opened (the first one included).
        reconnects: connections opened again after the previous one was lost.
        idle_renewals: times IDLE was ended and re-issued because ``renew_after`` passed.
        messages_fetched: messages returned by the fetch methods.
    """

    connections: int
    reconnects: int
    idle_renewals: int
    messages_fetched: int


# -- the blocking side (runs on worker threads) --------------------------------------------------


def _imaplib_error(exc: Exception) -> MailError | None:
    """imaplib's errors as trionet's (None: not one of them)."""
    if isinstance(exc, imaplib.IMAP4.readonly):
        return IMAPCommandError("IMAP", "NO", f"the mailbox became read-only ({exc})")
    if isinstance(exc, imaplib.IMAP4.abort):
        return IMAPConnectionError(f"the IMAP connection was lost: {exc}")
    if isinstance(exc, imaplib.IMAP4.error):
        return IMAPCommandError("IMAP", "BAD", str(exc))
    if isinstance(exc, ValueError | IndexError) and not isinstance(exc, OSError):
        # imaplib choking on a malformed response (OSErrors, such as a refused certificate,
        # are the socket's or TLS's)
        return IMAPProtocolError(f"malformed IMAP response: {exc}")
    return None


_IMAP: Final = MailProtocol(
    "IMAP", "AsyncIMAPClient", 993, IMAPConnectionError, IMAPProtocolError, _imaplib_error
)


def _text(data: list[Any] | None) -> str:
    if not data:
        return ""
    last = data[-1]
    if isinstance(last, tuple):
        last = last[0]
    if isinstance(last, bytes):
        return last.decode("utf-8", "replace")
    return "" if last is None else str(last)


def _check_flags(flags: Iterable[str]) -> list[str]:
    out = []
    for flag in [flags] if isinstance(flags, str) else flags:
        if not isinstance(flag, str) or not _FLAG_RE.fullmatch(flag):
            raise MailMessageError(f"invalid IMAP flag {flag!r}")
        out.append(flag)
    return out


class _IMAPConnection(TLSConnection, imaplib.IMAP4):
    """imaplib.IMAP4 on a socket that trio connected, with its own read buffer. Every method
    blocks; call them through :func:`run_interruptible` with :attr:`interrupter`."""

    _protocol = _IMAP

    def __init__(self, transport: Transport, host: str, port: int, limits: _Limits) -> None:
        self._init_transport(transport)
        self._limits = limits
        self._buf = bytearray()
        self._pos = 0
        # what the server sent since our last command (bounded by the limits)
        self._response_bytes = 0
        self._response_lines = 0
        self.pending: list[IdleEvent] = []
        self.idle_tag: bytes | None = None  # the tag of the IDLE in progress (None: not idling)
        wait = self._greeting_wait()
        transport.sock.settimeout(wait)
        # opens through our open(), reads the greeting, asks for CAPABILITY
        try:
            super().__init__(host, port)
        except TimeoutError as exc:
            if getattr(self, "welcome", None):  # greeted: the server stopped answering later
                raise
            raise self._no_greeting(host, port, wait) from exc
        self.sock.settimeout(transport.socket_timeout)

    # -- transport --------------------------------------------------------------------------------

    def open(self, host: str = "", port: int = 993, timeout: float | None = None) -> None:
        self.host = host
        self.port = port
        sock = self._connected_sock
        if self._implicit_tls is not None:
            sock = self._wrap(self._implicit_tls, sock, host)
        self.sock = sock

    def _fill(self) -> bool:
        if self._pos >= _COMPACT_AT:
            del self._buf[: self._pos]
            self._pos = 0
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def readline(self) -> bytes:
        scanned = 0  # bytes after _pos known to hold no line end (_fill may move _pos)
        while True:
            end = self._buf.find(b"\n", self._pos + scanned)
            if end >= 0:
                self._count(end + 1 - self._pos, 1)
                line = bytes(self._buf[self._pos : end + 1])
                self._pos = end + 1
                return line
            scanned = len(self._buf) - self._pos
            if scanned > self._limits.max_line_length:
                raise IMAPProtocolError(
                    f"the IMAP server sent a line longer than max_line_length="
                    f"{self._limits.max_line_length} bytes; the connection is closed"
                )
            if not self._fill():  # EOF: imaplib turns an incomplete line into an abort
                line = bytes(self._buf[self._pos :])
                self._pos = len(self._buf)
                return line

    def _count(self, size: int, lines: int) -> None:
        """Charge received response data against the limits (before holding it)."""
        limits = self._limits
        self._response_bytes += size
        self._response_lines += lines
        if self._response_bytes > limits.max_response_size:
            raise IMAPProtocolError(
                f"the IMAP server's response exceeds max_response_size="
                f"{limits.max_response_size} bytes; the connection is closed"
            )
        if self._response_lines > limits.max_response_lines:
            raise IMAPProtocolError(
                f"the IMAP server's response exceeds max_response_lines="
                f"{limits.max_response_lines} lines; the connection is closed"
            )

    def read(self, size: int) -> bytes:
        """Read a literal of ``size`` bytes (imaplib calls this after a line ending in
        ``{size}``); refused before any of it is read if it is beyond the limits."""
        if size > self._limits.max_literal_size:
            raise IMAPProtocolError(
                f"the IMAP server announced a literal of {size} bytes, more than "
                f"max_literal_size={self._limits.max_literal_size}; the connection is closed"
            )
        self._count(size, 0)
        while len(self._buf) - self._pos < size:
            if not self._fill():
                break
        data = bytes(self._buf[self._pos : self._pos + size])
        self._pos += len(data)
        return data

    def buffered(self) -> bool:
        """Whether response bytes are already here (in our buffer or decrypted by TLS)."""
        if self._pos < len(self._buf):
            return True
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def send(self, data: ReadableBuffer) -> None:
        # a new command (or continuation): its response starts a new count
        self._response_bytes = 0
        self._response_lines = 0
        super().send(data)

    def shutdown(self) -> None:
        sock = self.sock
        with contextlib.suppress(OSError):
            sock.close()

    def discard(self) -> None:
        self.shutdown()

    # -- commands ---------------------------------------------------------------------------------

    def run(self, name: str, *args: str | None) -> list[Any]:
        """A simple command; raises IMAPCommandError on NO or BAD."""
        try:
            typ, data = self._simple_command(name, *args)
        except self.abort:
            raise
        except self.error as exc:
            raise IMAPCommandError(name, "BAD", str(exc)) from exc
        if typ != "OK":
            raise self.refusal(name, typ, data)
        return list(data)

    def run_uid(self, command: str, *args: str) -> list[Any]:
        """A UID command; returns its untagged data (SEARCH or FETCH)."""
        try:
            typ, data = self.uid(command, *args)
        except self.abort:
            raise
        except self.error as exc:
            raise IMAPCommandError(f"UID {command}", "BAD", str(exc)) from exc
        if typ != "OK":
            raise self.refusal(f"UID {command}", typ, data)
        return list(data)

    @staticmethod
    def refusal(command: str, status: str, data: list[Any]) -> IMAPCommandError:
        code, _, text = split_response_code(_text(data))
        return IMAPCommandError(command, status, text, response_code=code)

    def settle(self) -> None:
        """Keep the EXISTS updates for idle() and forget the other unsolicited responses."""
        exists = self.untagged_responses.pop("EXISTS", None)
        if exists:
            for value in exists:
                if isinstance(value, bytes) and value.isdigit() and (
                    len(self.pending) < _MAX_PENDING_EVENTS
                ):
                    self.pending.append(IdleEvent("exists", int(value), value + b" EXISTS"))
        self.untagged_responses.clear()

    def open_session(self, params: ConnectParams, context: ssl.SSLContext | None) -> None:
        # (imaplib read the greeting in __init__)
        if not self._wants_starttls(params.start_tls, "STARTTLS" in self.capabilities):
            return
        self.run("STARTTLS")
        if self.buffered():
            # RFC 3501: nothing may follow the STARTTLS reply before the handshake
            raise IMAPProtocolError("the IMAP server sent data after its STARTTLS reply")
        self.sock = self._start_tls(self.sock, context, self.host)
        self._tls_established = True
        self.refresh_capabilities()

    def refresh_capabilities(self) -> None:
        data = self.run("CAPABILITY")
        caps = self.untagged_responses.pop("CAPABILITY", None) or data
        self.capabilities = tuple(_text(caps).upper().split())

    def authenticate_with(self, mechanism: str | None, username: str, secret: str) -> str:
        if self.state != "NONAUTH":
            raise IMAPAuthenticationError(
                "already logged in", response_code=None, reply="", fault="local"
            )
        self._check_secure(self.host, self.port)
        caps = set(self.capabilities)
        if mechanism is None:
            if "LOGINDISABLED" in caps:
                raise IMAPAuthenticationError(
                    "the IMAP server refuses LOGIN on an unencrypted connection "
                    "(LOGINDISABLED): connect with TLS or STARTTLS",
                    response_code=None, reply="", fault="local",
                )
            mechanism = "LOGIN" if username.isascii() and secret.isascii() else "PLAIN"
        if mechanism != "LOGIN" and f"AUTH={mechanism}" not in caps:
            offered = " ".join(c[5:] for c in sorted(caps) if c.startswith("AUTH="))
            raise IMAPAuthenticationError(
                f"the IMAP server does not offer AUTHENTICATE {mechanism} "
                f"(it offers: {offered or 'nothing'})",
                response_code=None, reply="", fault="local",
            )
        if mechanism == "LOGIN":
            typ, data = self._simple_command(
                "LOGIN", quote_string(username), quote_string(secret)
            )
            if typ != "OK":
                code, _, text = split_response_code(_text(data))
                raise IMAPAuthenticationError(
                    f"the IMAP server refused LOGIN for {username!r}: {typ} {_text(data)}",
                    response_code=code, reply=text,
                )
            self.state = "AUTH"
        else:
            if mechanism == "PLAIN":
                first = b"\0" + username.encode() + b"\0" + secret.encode()
            elif mechanism == "OAUTHBEARER":
                first = oauthbearer_bytes(username, secret)
            else:
                first = xoauth2_bytes(username, secret)
            steps = iter([first])
            # after an error report (a JSON challenge), XOAUTH2 wants an empty line and
            # OAUTHBEARER a lone ^A (RFC 7628); then the server says NO
            final = b"\x01" if mechanism == "OAUTHBEARER" else b""

            def respond(challenge: bytes) -> bytes:
                return next(steps, final)

            try:
                self.authenticate(mechanism, respond)
            except self.abort:
                raise
            except self.error as exc:
                code, _, text = split_response_code(str(exc))
                raise IMAPAuthenticationError(
                    f"the IMAP server refused AUTHENTICATE {mechanism} for {username!r}: {exc}",
                    response_code=code, reply=text,
                ) from exc
        self.refresh_capabilities()
        self.settle()
        return mechanism

    def select_mailbox(self, mailbox: str, readonly: bool) -> MailboxStatus:
        name = "EXAMINE" if readonly else "SELECT"
        typ, data = self.select(quote_string(encode_mailbox_name(mailbox)), readonly)
        if typ != "OK":
            raise self.refusal(name, typ, data)
        responses = self.untagged_responses

        def last_int(key: str) -> int | None:
            values = responses.get(key) or []
            for value in reversed(values):
                if isinstance(value, bytes) and value.strip().isdigit():
                    return int(value)
            return None

        flags_raw = _text(responses.get("FLAGS") or [])
        status = MailboxStatus(
            name=mailbox,
            exists=last_int("EXISTS") or 0,
            recent=last_int("RECENT") or 0,
            uidvalidity=last_int("UIDVALIDITY"),
            uidnext=last_int("UIDNEXT"),
            flags=frozenset(flags_raw.strip("()").split()),
            readonly=readonly or "READ-ONLY" in responses,
        )
        responses.clear()
        self.pending.clear()
        return status

    def search_uids(self, criteria: str) -> list[int]:
        data = self.run_uid("SEARCH", criteria or "ALL")
        uids: list[int] = []
        for item in data:
            if isinstance(item, bytes):
                uids.extend(int(x) for x in item.split() if x.isdigit())
        self.settle()
        return sorted(set(uids))

    def fetch_uids(self, uids: list[int], peek: bool) -> list[MailMessage]:
        if not uids:
            return []
        item = "BODY.PEEK[]" if peek else "BODY[]"
        data = self.run_uid("FETCH", format_uid_set(uids), f"(UID FLAGS {item})")
        self.settle()
        wanted = set(uids)
        bodies: dict[int, bytes] = {}
        flags: dict[int, frozenset[str]] = {}
        for fetched in parse_fetch_responses(data):
            if fetched.uid is None or fetched.uid not in wanted:
                continue
            if fetched.body is not None:
                bodies[fetched.uid] = fetched.body
            if fetched.flags is not None:
                flags[fetched.uid] = flags.get(fetched.uid, frozenset()) | fetched.flags
        messages = []
        for uid in sorted(bodies):
            message_flags = flags.get(uid, frozenset())
            if not peek:
                message_flags |= {"\\Seen"}
            messages.append(MailMessage.parse(bodies[uid], uid=uid, flags=message_flags))
        return messages

    def fetch_matching(self, criteria: str, limit: int | None, peek: bool) -> list[MailMessage]:
        uids = self.search_uids(criteria)
        if limit is not None:
            uids = uids[-limit:] if limit else []
        return self.fetch_uids(uids, peek)

    def store_flags(self, uids: list[int], operation: str, flags: list[str]) -> None:
        self.run_uid("STORE", format_uid_set(uids), operation, "(" + " ".join(flags) + ")")
        self.settle()

    def expunge_uids(self, uids: list[int]) -> None:
        if "UIDPLUS" in self.capabilities:
            self.run_uid("EXPUNGE", format_uid_set(uids))
        else:
            self.run("EXPUNGE")
        self.settle()

    def _copyuid(self) -> dict[int, int]:
        values = self.untagged_responses.pop("COPYUID", None)
        if not values:
            return {}
        parts = _text(values).split()
        if len(parts) != 3:
            return {}
        source, target = parse_uid_set(parts[1]), parse_uid_set(parts[2])
        return dict(zip(source, target, strict=False))

    def move_uids(self, uids: list[int], mailbox: str) -> dict[int, int]:
        target = quote_string(encode_mailbox_name(mailbox))
        uid_set = format_uid_set(uids)
        if "MOVE" in self.capabilities:
            self.run_uid("MOVE", uid_set, target)
            mapping = self._copyuid()
        else:
            self.run_uid("COPY", uid_set, target)
            mapping = self._copyuid()
            self.run_uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
            self.expunge_uids(uids)
        self.settle()
        return mapping

    def copy_uids(self, uids: list[int], mailbox: str) -> dict[int, int]:
        self.run_uid("COPY", format_uid_set(uids), quote_string(encode_mailbox_name(mailbox)))
        mapping = self._copyuid()
        self.settle()
        return mapping

    def append_message(
        self, mailbox: str, flags: list[str], date: str | None, data: bytes
    ) -> int | None:
        typ, response = self.append(
            quote_string(encode_mailbox_name(mailbox)),
            "(" + " ".join(flags) + ")" if flags else None,
            date,  # None means the server's "now"
            data,
        )
        if typ != "OK":
            raise self.refusal("APPEND", typ, response)
        uid: int | None = None
        values = self.untagged_responses.pop("APPENDUID", None)
        if values:
            parts = _text(values).split()
            if len(parts) == 2 and parts[1].isdigit():
                uid = int(parts[1])
        self.settle()
        return uid

    def list_boxes(self, reference: str, pattern: str) -> list[MailboxInfo]:
        try:
            typ, data = self._simple_command(
                "LIST", quote_string(encode_mailbox_name(reference)),
                quote_string(encode_mailbox_name(pattern)),
            )
        except self.abort:
            raise
        except self.error as exc:
            raise IMAPCommandError("LIST", "BAD", str(exc)) from exc
        if typ != "OK":
            raise self.refusal("LIST", typ, data)
        typ, items = self._untagged_response(typ, data, "LIST")
        boxes = parse_list_response(
            [item for item in items if isinstance(item, bytes | tuple)]
        )
        self.settle()
        return boxes

    def mailbox_command(self, name: str, mailbox: str) -> None:
        self.run(name, quote_string(encode_mailbox_name(mailbox)))
        self.settle()

    def ping(self) -> None:
        self.run("NOOP")
        self.settle()

    def goodbye(self) -> None:
        try:
            self.logout()
        finally:
            self.shutdown()

    # -- IDLE (RFC 2177) ------------------------------------------------------------------------

    def idle_start(self) -> bytes:
        tag: bytes = self._new_tag()
        self.send(tag + b" IDLE\r\n")
        while self._get_response() is not None:  # None: the "+ idling" continuation
            result: Any = self.tagged_commands.get(tag)
            if result is not None:
                del self.tagged_commands[tag]
                status, data = result
                raise self.refusal("IDLE", status, data)
        self.idle_tag = tag
        self._check_bye()
        return tag

    def idle_read(self) -> list[IdleEvent]:
        """Read what the server sent while idling (call when the socket is readable)."""
        if not self.buffered():
            self.sock.settimeout(_IDLE_POLL if self.socket_timeout is None else min(
                _IDLE_POLL, self.socket_timeout))
            try:
                if not self._fill():
                    raise self.abort("socket error: EOF while idling")
            except TimeoutError:
                return []  # readable, but no data (a TLS-level record): wait again
            finally:
                self.sock.settimeout(self.socket_timeout)
        while self.buffered():
            self._get_response()
        self._check_bye()
        return self.idle_events()

    def idle_done(self, tag: bytes) -> list[IdleEvent]:
        self.send(b"DONE\r\n")
        while self.tagged_commands.get(tag) is None:
            self._get_response()
        self.idle_tag = None
        result: Any = self.tagged_commands.pop(tag)
        status, data = result
        events = self.idle_events()
        if status != "OK":
            raise self.refusal("IDLE", status, data)
        return events

    def idle_events(self) -> list[IdleEvent]:
        """The updates received so far, in a stable order (EXISTS last: it means new mail)."""
        self._response_bytes = 0  # handed over: no longer held
        self._response_lines = 0
        responses: dict[str, Any] = self.untagged_responses
        events: list[IdleEvent] = []
        kinds: tuple[tuple[str, IdleKind], ...] = (
            ("EXPUNGE", "expunge"), ("FETCH", "fetch"), ("RECENT", "recent"), ("EXISTS", "exists")
        )
        for key, kind in kinds:
            for value in responses.pop(key, None) or []:
                raw = value[0] if isinstance(value, tuple) else value
                if not isinstance(raw, bytes):
                    continue
                number = raw.split(b" ", 1)[0]
                events.append(
                    IdleEvent(
                        kind,
                        int(number) if number.isdigit() else None,
                        raw if kind == "fetch" else raw + b" " + key.encode(),
                    )
                )
        responses.pop("OK", None)
        return events


# -- the trio side -------------------------------------------------------------------------------


class AsyncIMAPClient(MailSession[_IMAPConnection]):
    """An IMAP client for trio (imaplib underneath, on worker threads).

    ::

        async with AsyncIMAPClient() as client:
            await client.connect("imap.example.com", 993)
            await client.login("user@example.com", "password")
            await client.select_mailbox("INBOX")
            messages = await client.fetch_messages(criteria="UNSEEN", limit=10)

    Messages are addressed by UID. Fetching uses one ``UID FETCH`` for all messages, with
    ``BODY.PEEK[]``, so it does not mark them read unless asked to. Calls from several tasks are
    served one at a time. After the connection is lost (or a call was cancelled, which closes
    it), the next call connects, logs in and selects the mailbox again.

    Leaving ``async with`` (or :meth:`aclose`) logs out and closes the connection.

    Args:
        socket_timeout: the bound on any single blocking socket operation, as for
            :class:`AsyncSMTPClient` (default 60 s; None: no limit).
        greeting_timeout: the wait for the greeting, as for :class:`AsyncSMTPClient` (default
            15 s); a server that says nothing usually expects implicit TLS (IMAPS, port 993).
        allow_insecure_auth: send credentials over a connection that is not encrypted, as for
            :class:`AsyncSMTPClient` (by default :exc:`InsecureAuthError` refuses them). Only
            for a trusted network, such as a development server on loopback.
        max_line_length: the longest response line accepted, in bytes (default 1 MiB).
        max_literal_size: the largest literal (``{n}``, e.g. a message's body) accepted, in
            bytes (default 64 MiB); checked when announced, before any of it is read.
        max_response_size: the most bytes of lines and literals one command's response (or
            one burst of IDLE updates) may carry (default 256 MiB).
        max_response_lines: the most lines one command's response (or one burst of IDLE
            updates) may carry (default 1 000 000).

    A response beyond a limit raises :exc:`IMAPProtocolError` and closes the connection (the
    next call connects again).
    """

    _protocol = _IMAP

    def __init__(
        self,
        *,
        socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
        greeting_timeout: float | None = DEFAULT_GREETING_TIMEOUT,
        allow_insecure_auth: bool = False,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_literal_size: int = DEFAULT_MAX_LITERAL_SIZE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        max_response_lines: int = DEFAULT_MAX_RESPONSE_LINES,
    ) -> None:
        super().__init__(socket_timeout=socket_timeout, greeting_timeout=greeting_timeout,
                         allow_insecure_auth=allow_insecure_auth)
        limits = {
            "max_line_length": max_line_length,
            "max_literal_size": max_literal_size,
            "max_response_size": max_response_size,
            "max_response_lines": max_response_lines,
        }
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive int, not {value!r}")
        self._limits = _Limits(**limits)
        self._mailbox: tuple[str, bool] | None = None
        self._idle_renewals = 0
        self._messages_fetched = 0

    # -- properties -------------------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities (upper case), as of the last CAPABILITY response."""
        return frozenset(self._conn.capabilities) if self._conn is not None else frozenset()

    @property
    def selected_mailbox(self) -> str | None:
        """The mailbox chosen with :meth:`select_mailbox` (None before)."""
        return self._mailbox[0] if self._mailbox is not None else None

    def statistics(self) -> IMAPStatistics:
        """Counters of connections, reconnections, IDLE renewals and fetched messages."""
        return IMAPStatistics(
            self._connections, self._reconnects, self._idle_renewals, self._messages_fetched
        )

    # -- connection -------------------------------------------------------------------------------

    async def connect(self, host: str, port: int = 993, *, use_tls: bool | None = None,
                      start_tls: bool | None = None, ssl_context: ssl.SSLContext | None = None,
                      source_address: Address | None = None, tls: TLSArgument = None) -> None:
        await super().connect(host, port, use_tls=use_tls, start_tls=start_tls,
                              ssl_context=ssl_context, source_address=source_address, tls=tls)

    def _forget(self) -> None:
        self._mailbox = None

    async def _restore(self, conn: _IMAPConnection) -> None:
        if self._mailbox is not None:  # a new connection: select the mailbox again
            await self._call(conn.select_mailbox, *self._mailbox)

    async def _op(self, method: Callable[..., T], *args: Any) -> T:
        """Call ``method(conn, *args)`` on the current connection, under the lock."""
        async with self._lock:
            conn = await self._ensure_connected()
            return await self._call(method, conn, *args)

    def _build(self, transport: Transport, params: ConnectParams) -> _IMAPConnection:
        # imaplib reads the greeting in __init__ (and closes the connection if that fails)
        return _IMAPConnection(transport, params.host, params.port, self._limits)

    # -- commands ---------------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> None:
        """Log in with ``LOGIN`` (or ``AUTHENTICATE PLAIN`` for non-ASCII credentials), once.

        Raises:
            IMAPAuthenticationError: the server refused (``response_code`` is typically
                ``"AUTHENTICATIONFAILED"``, ``reply`` the server's text), or refuses plaintext
                login before TLS (``LOGINDISABLED``).
            InsecureAuthError: the connection is not encrypted (no TLS, no STARTTLS) and the
                client was not made with ``allow_insecure_auth=True``; nothing was sent.
        """
        await self._login(None, username, password)

    async def login_oauth2(self, username: str, access_token: str | TokenProvider, *,
                           mechanism: str = "XOAUTH2") -> None:
        """Log in with an OAuth 2.0 access token (Gmail, Outlook): ``AUTHENTICATE XOAUTH2`` or
        ``AUTHENTICATE OAUTHBEARER`` (RFC 7628).

        ``access_token`` is the token or a token provider, as for
        :meth:`AsyncSMTPClient.login_oauth2 <trionet.mail.AsyncSMTPClient.login_oauth2>`
        (refreshed near its expiry and after the server refused it).

        Raises:
            IMAPAuthenticationError: the server refused, or does not offer the mechanism.
            InsecureAuthError: see :meth:`login`.
        """
        mechanism = mechanism.upper()
        if mechanism not in ("XOAUTH2", "OAUTHBEARER"):
            raise ConfigurationError(
                f"mechanism must be XOAUTH2 or OAUTHBEARER, not {mechanism!r}"
            )
        if callable(access_token):
            await self._login(mechanism, username, "", TokenCache(access_token))
        else:
            await self._login(mechanism, username, access_token)

    async def select_mailbox(self, mailbox: str = "INBOX", *, readonly: bool = False
                             ) -> MailboxStatus:
        """Open a mailbox (``SELECT``, or ``EXAMINE`` when ``readonly``).

        Returns:
            The mailbox's :class:`MailboxStatus` (message count, UIDVALIDITY, UIDNEXT, ...);
            mtaio returned the message count alone, which is ``status.exists`` here.

        Raises:
            IMAPCommandError: no such mailbox (or not allowed).
        """
        check_credential(mailbox, "mailbox")
        async with self._lock:
            conn = await self._ensure_connected()
            status = await self._call(conn.select_mailbox, mailbox, readonly)
            self._mailbox = (mailbox, readonly)
            return status

    async def search(self, criteria: str = "ALL") -> list[int]:
        """The UIDs of the messages matching IMAP search ``criteria``, ascending.

        ``criteria`` is passed to ``UID SEARCH`` as written, e.g. ``"UNSEEN"``,
        ``'FROM "alice" SINCE 1-Jan-2026'`` or ``'HEADER Message-ID "<id@host>"'``.
        """
        criteria = self._criteria(criteria)
        return await self._op(_IMAPConnection.search_uids, criteria)

    @staticmethod
    def _criteria(criteria: str) -> str:
        check_credential(criteria, "criteria")
        if not criteria.isascii():
            raise ConfigurationError(
                "search criteria must be ASCII (non-ASCII search strings are not supported)"
            )
        return criteria.strip() or "ALL"

    async def fetch_messages(
        self, criteria: str = "UNSEEN", limit: int | None = 10, *, mark_seen: bool = False
    ) -> list[MailMessage]:
        """Search, then fetch the matching messages with one ``UID FETCH``.

        Args:
            criteria: IMAP search criteria (see :meth:`search`).
            limit: at most this many messages, the newest ones (highest UIDs); None for all.
            mark_seen: fetch with ``BODY[]``, which sets ``\\Seen``; by default ``BODY.PEEK[]``
                leaves the flags alone.

        Returns:
            The messages in ascending UID order, each with its :attr:`~MailMessage.uid` and
            :attr:`~MailMessage.flags`.
        """
        criteria = self._criteria(criteria)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ConfigurationError(f"limit must be a non-negative int or None, not {limit!r}")
        messages = await self._op(_IMAPConnection.fetch_matching, criteria, limit, not mark_seen)
        self._messages_fetched += len(messages)
        return messages

    async def fetch(self, uids: Iterable[int], *, mark_seen: bool = False) -> list[MailMessage]:
        """Fetch the given messages (one ``UID FETCH``); UIDs that no longer exist are skipped.

        Args:
            uids: the messages' UIDs.
            mark_seen: see :meth:`fetch_messages`.
        """
        wanted = sorted(set(uids))
        if not wanted:
            return []
        format_uid_set(wanted)  # validates
        messages = await self._op(_IMAPConnection.fetch_uids, wanted, not mark_seen)
        self._messages_fetched += len(messages)
        return messages

    async def add_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        """Add flags (``"\\\\Seen"``, ``"\\\\Flagged"``, keywords) to the messages."""
        await self._store(uids, "+FLAGS.SILENT", flags)

    async def remove_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        """Remove flags from the messages."""
        await self._store(uids, "-FLAGS.SILENT", flags)

    async def mark_seen(self, uids: Iterable[int]) -> None:
        """Mark the messages read (add ``\\Seen``)."""
        await self._store(uids, "+FLAGS.SILENT", ["\\Seen"])

    async def mark_unseen(self, uids: Iterable[int]) -> None:
        """Mark the messages unread (remove ``\\Seen``)."""
        await self._store(uids, "-FLAGS.SILENT", ["\\Seen"])

    async def _store(self, uids: Iterable[int], operation: str, flags: Iterable[str]) -> None:
        wanted = self._uids(uids)
        checked = _check_flags(flags)
        if not checked:
            return
        await self._op(_IMAPConnection.store_flags, wanted, operation, checked)

    @staticmethod
    def _uids(uids: Iterable[int]) -> list[int]:
        wanted = sorted(set(uids))
        format_uid_set(wanted)  # validates: raises on an empty or invalid set
        return wanted

    async def move(self, uids: Iterable[int], mailbox: str) -> dict[int, int]:
        """Move messages to another mailbox (``UID MOVE``; COPY + delete without MOVE).

        Returns:
            Old UID -> UID in the target mailbox, when the server reports it (UIDPLUS).

        Raises:
            IMAPCommandError: e.g. the target does not exist (``response_code`` ``"TRYCREATE"``).
        """
        wanted = self._uids(uids)
        check_credential(mailbox, "mailbox")
        return await self._op(_IMAPConnection.move_uids, wanted, mailbox)

    async def copy(self, uids: Iterable[int], mailbox: str) -> dict[int, int]:
        """Copy messages to another mailbox (``UID COPY``); returns old UID -> new UID."""
        wanted = self._uids(uids)
        check_credential(mailbox, "mailbox")
        return await self._op(_IMAPConnection.copy_uids, wanted, mailbox)

    async def delete_messages(self, uids: Iterable[int]) -> None:
        """Delete messages: flag them ``\\Deleted`` and expunge exactly them.

        With UIDPLUS (almost every server) this is ``UID EXPUNGE`` of these UIDs; without it, a
        plain ``EXPUNGE`` also removes other messages already flagged ``\\Deleted``.
        """
        wanted = self._uids(uids)

        def delete(conn: _IMAPConnection) -> None:
            conn.store_flags(wanted, "+FLAGS.SILENT", ["\\Deleted"])
            conn.expunge_uids(wanted)

        await self._op(delete)

    async def append(
        self,
        message: MailMessage | bytes,
        mailbox: str = "INBOX",
        *,
        flags: Iterable[str] = (),
        date: _dt.datetime | None = None,
    ) -> int | None:
        """Store a message in a mailbox (``APPEND``), e.g. a copy in "Sent".

        Args:
            message: a :class:`MailMessage` (built as for sending) or raw RFC 5322 bytes.
            mailbox: the target mailbox.
            flags: its flags, e.g. ``["\\\\Seen"]``.
            date: its internal date (default: now, per the server).

        Returns:
            The new message's UID, when the server reports it (UIDPLUS), else None.
        """
        check_credential(mailbox, "mailbox")
        checked = _check_flags(flags)
        if isinstance(message, MailMessage):
            data = message.as_bytes()
        elif isinstance(message, bytes | bytearray):
            data = bytes(message)
        else:
            raise MailMessageError(
                f"append() takes a MailMessage or bytes, not {type(message).__name__}"
            )
        internal_date: str | None = None
        if date is not None:
            if date.tzinfo is None:
                raise ConfigurationError("append(date=...) needs a timezone-aware datetime")
            internal_date = imaplib.Time2Internaldate(date)
        return await self._op(
            _IMAPConnection.append_message, mailbox, checked, internal_date, data
        )

    async def list_mailboxes(self, pattern: str = "*", *, reference: str = "") -> list[MailboxInfo]:
        """The mailboxes matching ``pattern`` (``*``: all, ``%``: one level)."""
        check_credential(pattern, "pattern")
        check_credential(reference, "reference")
        return await self._op(_IMAPConnection.list_boxes, reference, pattern)

    async def create_mailbox(self, mailbox: str) -> None:
        """Create a mailbox (any Unicode name)."""
        check_credential(mailbox, "mailbox")
        await self._op(_IMAPConnection.mailbox_command, "CREATE", mailbox)

    async def delete_mailbox(self, mailbox: str) -> None:
        """Delete a mailbox (and the messages in it)."""
        check_credential(mailbox, "mailbox")
        await self._op(_IMAPConnection.mailbox_command, "DELETE", mailbox)

    async def noop(self) -> None:
        """Send NOOP (keeps the connection alive; the server may report changes)."""
        await self._op(_IMAPConnection.ping)

    # -- IDLE -------------------------------------------------------------------------------------

    def idle(self, *, renew_after: float = 540.0) -> AsyncIterator[IdleEvent]:
        """Wait for changes in the selected mailbox with IDLE (RFC 2177), forever.

        ::

            async for event in client.idle():
                if event.kind in ("exists", "reconnected"):
                    new = await client.fetch_messages("UNSEEN")

        The connection is not idling while your loop body runs, so the body may use the client,
        and leaving the loop (``break``, an exception) needs no clean-up. IDLE is ended and
        re-issued every ``renew_after`` seconds, before servers drop an idle client (RFC 2177
        asks for at most 29 minutes; many servers cut at 10). When the server says BYE or drops
        the connection, the client reconnects, logs in, selects the mailbox again and yields an
        event of kind ``"reconnected"``. Cancelling the loop while it waits ends IDLE with
        ``DONE``, so the connection stays usable.

        Args:
            renew_after: seconds after which IDLE is re-issued.

        Returns:
            An async iterator of :class:`IdleEvent`. Iterating raises
            :class:`IMAPCommandError` if no mailbox is selected or the server does not support
            IDLE, and :class:`IMAPConnectionError` if reconnecting failed several times in a row.
        """
        if not renew_after > 0:
            raise ConfigurationError("renew_after must be positive")
        return _IdleEvents(self, renew_after)

    async def _idle_step(self, renew_after: float) -> list[IdleEvent]:
        try:
            return await self._idle_round(renew_after)
        except IMAPConnectionError as exc:
            if self._params is None or self._credentials is None:
                raise
            await self._reconnect_for_idle(exc)
            return [IdleEvent("reconnected")]

    async def _reconnect_for_idle(self, cause: IMAPConnectionError) -> None:
        logger.info("IMAP connection lost while idling (%s); reconnecting", cause)
        error: MailError = cause
        for delay in _RECONNECT_DELAYS:
            await trio.sleep(delay)
            try:
                async with self._lock:
                    await self._ensure_connected()
                return
            except IMAPConnectionError as exc:
                error = exc
        raise IMAPConnectionError(
            f"could not reconnect to the IMAP server after {len(_RECONNECT_DELAYS)} attempts: "
            f"{error}"
        ) from error

    async def _idle_round(self, renew_after: float) -> list[IdleEvent]:
        async with self._lock:
            conn = await self._ensure_connected()
            if conn.pending:  # new mail reported during other commands since the last round
                events, conn.pending = conn.pending, []
                return events
            if conn.state != "SELECTED":
                raise IMAPCommandError(
                    "IDLE", "", "select a mailbox before idling", fault="local"
                )
            if "IDLE" not in conn.capabilities:
                raise IMAPCommandError(
                    "IDLE", "", "the server does not support IDLE", fault="local"
                )
            # A cancellation lets an exchange on the thread (IDLE and its "+", DONE and its OK, a
            # read of updates) run to its end, within CLOSE_TIMEOUT: cut in the middle, it would
            # leave the connection out of step, and the connection would have to be dropped.
            try:
                tag = await self._call(conn.idle_start, grace=CLOSE_TIMEOUT)
                events = conn.idle_events()  # updates sent before "+ idling" (no I/O)
                deadline = trio.current_time() + renew_after
                while not events:
                    if not conn.buffered():
                        with trio.move_on_at(deadline) as waiting:
                            await trio.lowlevel.wait_readable(conn.sock)
                        if waiting.cancelled_caught:
                            break
                    events = await self._call(conn.idle_read, grace=CLOSE_TIMEOUT)
                events += await self._call(conn.idle_done, tag, grace=CLOSE_TIMEOUT)
            except trio.Cancelled:
                await self._end_idle_after_cancel(conn)
                raise
            except BaseException:
                if self._conn is conn and conn.idle_tag is not None:
                    self._drop()  # still idling: the session state is unknown
                raise
            if not events:
                self._idle_renewals += 1
            return events

    async def _end_idle_after_cancel(self, conn: _IMAPConnection) -> None:
        """After a cancellation, send DONE if the connection is still idling, shielded and
        bounded; drop the connection if that does not work out."""
        tag = conn.idle_tag
        if self._conn is not conn or tag is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await self._call(conn.idle_done, tag)
                return
            except MailError:
                pass
        if self._conn is conn:
            self._drop()

    # -- closing ----------------------------------------------------------------------------------

    async def logout(self) -> None:
        """Log out and close the connection (the same as :meth:`aclose`)."""
        await self.aclose()


class _IdleEvents:
    """The iterator :meth:`AsyncIMAPClient.idle` returns.

    A class rather than an async generator: it holds nothing between events (the connection is
    not idling then), so a loop that stops early leaves nothing to finalise.
    """

    def __init__(self, client: AsyncIMAPClient, renew_after: float) -> None:
        self._client = client
        self._renew_after = renew_after
        self._events: collections.deque[IdleEvent] = collections.deque()

    def __aiter__(self) -> _IdleEvents:
        return self

    async def __anext__(self) -> IdleEvent:
        while not self._events:
            self._events.extend(await self._client._idle_step(self._renew_after))
        return self._events.popleft()
