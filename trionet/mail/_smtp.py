"""AsyncSMTPClient: smtplib on a worker thread, driven from trio.

How a call runs: the client holds one ``smtplib.SMTP`` object per connection and a
:class:`trio.Lock`, so exactly one blocking smtplib call runs at a time, on a worker thread
(:func:`trionet._threads.run_blocking`). The TCP connection itself is made from trio. If the
calling task is cancelled (a ``trio.fail_after`` deadline, a cancelled nursery), the connection's
socket is shut down, which makes the blocked smtplib call return at once; the connection is then
closed and the next send opens a new one. Every blocking socket operation also carries a timeout
(``socket_timeout``) as a backstop. No thread outlives the call that started it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .. import metrics as _metrics, tracing as _tracing
from ..errors import ConfigurationError, MailError
from ..tls import TLSArgument
from ._errors import (
    MailMessageError,
    SMTPAuthenticationError,
    SMTPConnectionError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPResponseError,
)
from ._message import MailMessage
from ._oauth import TokenCache, TokenProvider, oauthbearer_bytes
from ._session import MailProtocol, MailSession, TLSConnection, Transport
from ._transport import (
    DEFAULT_GREETING_TIMEOUT,
    DEFAULT_SOCKET_TIMEOUT,
    Address,
    ConnectParams,
    check_credential,
    plain_initial_response,
    xoauth2_initial_response,
)
from ._types import RecipientResult, SendResult

__all__ = ["AsyncSMTPClient", "RecipientResult", "SMTPStatistics", "SendResult"]

logger = logging.getLogger("trionet.mail")

_MECHANISMS: Final = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")
_OAUTH_MECHANISMS: Final = ("XOAUTH2", "OAUTHBEARER")
_LINE_START_DOT: Final = re.compile(rb"(?m)^\.")
#: The most lines one (multi-line) reply may have, and the longest line (smtplib's limit).
MAX_REPLY_LINES: Final = 1000
_MAX_REPLY_LINE: Final = 8192


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SMTPStatistics:
    """Counters of an :class:`AsyncSMTPClient` (see :meth:`AsyncSMTPClient.statistics`).

    Attributes:
        connections: TCP connections opened (the first one included).
        reconnects: connections opened again after the previous one was lost.
        messages_sent: messages the server accepted.
        recipients_refused: recipients the server refused.
    """

    connections: int
    reconnects: int
    messages_sent: int
    recipients_refused: int


# -- the blocking side (runs on worker threads) -------------------------------------------------


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _smtplib_error(exc: Exception) -> MailError | None:
    """smtplib's errors as trionet's (None: not one of them)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if isinstance(exc.__context__, TimeoutError):
            return SMTPConnectionError("the SMTP server did not answer within socket_timeout")
        return SMTPConnectionError(f"the SMTP server closed the connection ({exc})")
    if isinstance(exc, smtplib.SMTPResponseException):
        return SMTPResponseError("SMTP", exc.smtp_code, _text(exc.smtp_error))
    if isinstance(exc, smtplib.SMTPException):
        return SMTPProtocolError(str(exc))
    return None


_SMTP: Final = MailProtocol(
    "SMTP", "AsyncSMTPClient", 465, SMTPConnectionError, SMTPProtocolError, _smtplib_error
)


class _Outgoing:
    """A message being sent: its envelope and bytes, built once (on a worker thread)."""

    __slots__ = ("data", "message", "recipients", "sender", "smtputf8")

    def __init__(self, message: MailMessage) -> None:
        self.message = message
        self.sender = message.envelope_sender
        self.recipients = message.envelope_recipients
        self.smtputf8 = message.needs_smtputf8
        self.data: bytes | None = None

    def build(self) -> bytes:
        if self.data is None:
            self.data = self.message.as_bytes(utf8=self.smtputf8)
        return self.data


class _SMTPConnection(TLSConnection, smtplib.SMTP):
    """smtplib.SMTP on a socket that trio connected. Every method blocks; call them through
    :func:`run_interruptible` with this connection's :attr:`interrupter`."""

    _protocol = _SMTP

    def __init__(self, transport: Transport, *, local_hostname: str | None) -> None:
        self._init_transport(transport)
        self._where = ("", 0)
        # host="" makes smtplib connect later, through connect() and our _get_socket (the
        # socket already carries its timeout)
        super().__init__("", local_hostname=local_hostname)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self._connected_sock
        context = self._implicit_tls
        if context is not None:
            sock = self._wrap(context, sock, host)
        return sock

    def getreply(self) -> tuple[int, bytes]:
        """Read one reply (smtplib's, with a bound on the number of lines)."""
        if self.file is None:
            assert self.sock is not None
            self.file = self.sock.makefile("rb")
        texts: list[bytes] = []
        while True:
            try:
                line = self.file.readline(_MAX_REPLY_LINE + 1)
            except OSError as exc:
                self.close()
                raise smtplib.SMTPServerDisconnected(
                    f"Connection unexpectedly closed: {exc}"
                ) from exc
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            if len(line) > _MAX_REPLY_LINE:
                raise SMTPProtocolError(
                    f"the SMTP server sent a reply line longer than {_MAX_REPLY_LINE} bytes"
                )
            texts.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                return -1, b"\n".join(texts)
            if line[3:4] != b"-":
                return code, b"\n".join(texts)
            if len(texts) >= MAX_REPLY_LINES:
                raise SMTPProtocolError(
                    f"the SMTP server sent a reply of more than {MAX_REPLY_LINES} lines"
                )

    def reply(self) -> tuple[int, str]:
        code, text = self.getreply()
        if code < 0:
            raise SMTPProtocolError(f"malformed SMTP reply: {_text(text)!r}")
        if code == 421:
            self.close()
            raise SMTPConnectionError(f"the SMTP server is closing the connection: 421 "
                                      f"{_text(text)}", code=421)
        return code, _text(text)

    def command(self, line: str) -> tuple[int, str]:
        self.send(line + "\r\n")
        return self.reply()

    def _hello(self) -> None:
        self.helo_resp = None
        self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False
        self.ehlo_or_helo_if_needed()

    def _greet(self, host: str, port: int) -> tuple[int, bytes]:
        """Connect smtplib (implicit TLS handshake included) and read the greeting, waiting at
        most the greeting timeout for it."""
        self._where = (host, port)
        sock = self._connected_sock
        previous = sock.gettimeout()
        sock.settimeout(self._greeting_wait())
        try:
            return self.connect(host, port)
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
            if not timed_out:
                raise
            raise self._no_greeting(host, port, sock.gettimeout()) from exc
        finally:
            if self.sock is not None:
                self.sock.settimeout(previous)

    def open_session(self, params: ConnectParams, context: ssl.SSLContext | None) -> None:
        host, port, start_tls = params.host, params.port, params.start_tls
        code, greeting = self._greet(host, port)
        if code == 421 or not 200 <= code < 300:
            raise SMTPConnectionError(
                f"the SMTP server refused the connection: {code} {_text(greeting)}", code=code
            )
        self._hello()
        if not self._wants_starttls(start_tls, self.has_extn("starttls")):
            return
        code, reply = self.command("STARTTLS")
        if code != 220:
            raise SMTPResponseError("STARTTLS", code, reply)
        assert self.sock is not None
        self.sock = self._start_tls(self.sock, context, host)
        self.file = None  # anything the server sent before the handshake is dropped, unread
        self._hello()

    def authenticate_with(self, mechanism: str | None, username: str, secret: str) -> str:
        self._check_secure(*self._where)
        self.ehlo_or_helo_if_needed()
        offered = self.esmtp_features.get("auth", "").upper().split()
        if mechanism is None:
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
            if mechanism is None:
                detail = f"it offers {' '.join(offered)}" if offered else (
                    "it offers none (servers often offer AUTH only after STARTTLS)"
                )
                raise SMTPAuthenticationError(
                    f"the SMTP server offers neither AUTH PLAIN nor LOGIN: {detail}",
                    code=None, reply="",
                )
        elif mechanism not in offered:
            raise SMTPAuthenticationError(
                f"the SMTP server does not offer AUTH {mechanism} "
                f"(it offers: {' '.join(offered) or 'nothing'})",
                code=None, reply="",
            )
        if mechanism == "PLAIN":
            code, reply = self.command("AUTH PLAIN " + plain_initial_response(username, secret))
        elif mechanism == "LOGIN":
            code, reply = self.command("AUTH LOGIN")
            for value in (username, secret):
                if code != 334:
                    break
                code, reply = self.command(plain_b64(value))
        elif mechanism == "XOAUTH2":
            code, reply = self.command("AUTH XOAUTH2 " + xoauth2_initial_response(username, secret))
            if code == 334:  # a base64 JSON error: answer with an empty line to get the 535
                code, reply = self.command("")
        else:
            response = base64.b64encode(oauthbearer_bytes(username, secret)).decode("ascii")
            code, reply = self.command("AUTH OAUTHBEARER " + response)
            if code == 334:  # a base64 JSON error: RFC 7628 wants a lone ^A to end the exchange
                code, reply = self.command("AQ==")
        if code != 235:
            raise SMTPAuthenticationError(
                f"the SMTP server refused AUTH {mechanism} for {username!r}: {code} {reply}",
                code=code, reply=reply,
            )
        return mechanism

    def transact(
        self, outgoing: _Outgoing, following: _Outgoing | None = None
    ) -> tuple[list[RecipientResult], tuple[int, str] | None]:
        """One mail transaction; returns the RCPT replies and the final reply (None if no data
        was sent because every recipient was refused).

        While the server stores the message (its final reply takes longest), the ``following``
        message is built, so that building and the server's work overlap.
        """
        data = outgoing.build()
        self.ehlo_or_helo_if_needed()
        options = []
        if self.has_extn("size"):
            options.append(f"SIZE={len(data)}")
        if outgoing.smtputf8:
            if not self.has_extn("smtputf8"):
                raise MailMessageError(
                    "the message has non-ASCII addresses, and the SMTP server does not "
                    "support SMTPUTF8"
                )
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        mail = f"MAIL FROM:<{outgoing.sender}>" + "".join(f" {o}" for o in options)
        rcpts = [f"RCPT TO:<{address}>" for address in outgoing.recipients]
        self.command_encoding = "utf-8" if outgoing.smtputf8 else "ascii"
        try:
            if self.has_extn("pipelining"):
                # RFC 2920: the envelope and DATA in one write, then the replies in order.
                self.send("".join(f"{line}\r\n" for line in (mail, *rcpts, "DATA")))
                mail_reply = self.reply()
                rcpt_replies = [self.reply() for _ in rcpts]
                data_reply: tuple[int, str] | None = self.reply()
            else:
                mail_reply = self.command(mail)
                if not 200 <= mail_reply[0] < 300:
                    self._reset()
                    raise SMTPResponseError("MAIL FROM", *mail_reply)
                rcpt_replies = [self.command(line) for line in rcpts]
                accepted = any(200 <= code < 300 for code, _ in rcpt_replies)
                data_reply = self.command("DATA") if accepted else None
        finally:
            self.command_encoding = "ascii"
        if not 200 <= mail_reply[0] < 300:
            if data_reply is not None and data_reply[0] == 354:
                self.send(b".\r\n")
                self.reply()
            self._reset()
            raise SMTPResponseError("MAIL FROM", *mail_reply)
        results = [
            RecipientResult(address, code, reply)
            for address, (code, reply) in zip(outgoing.recipients, rcpt_replies, strict=True)
        ]
        accepted = any(r.accepted for r in results)
        if data_reply is None or data_reply[0] != 354:
            self._reset()
            if accepted and data_reply is not None:
                raise SMTPResponseError("DATA", *data_reply)
            return results, None
        if not accepted:
            # DATA was accepted although no recipient was: end the empty transaction
            self.send(b".\r\n")
            self.reply()
            self._reset()
            return results, None
        body = _LINE_START_DOT.sub(b"..", data)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.send(body + b".\r\n")
        if following is not None:
            with contextlib.suppress(MailError):  # reported when that message is sent
                following.build()
        final = self.reply()
        if not 200 <= final[0] < 300:
            raise SMTPResponseError("DATA", *final)
        return results, final

    def transact_many(
        self, batch: list[_Outgoing]
    ) -> tuple[list[tuple[list[RecipientResult], tuple[int, str] | None]], MailError | None]:
        """:meth:`transact` for each message in turn, in this one thread call (no hand-off per
        message); stops at the first error and returns it with the results so far."""
        done: list[tuple[list[RecipientResult], tuple[int, str] | None]] = []
        transact = _SMTP.translate(self.transact)
        for index, outgoing in enumerate(batch):
            following = batch[index + 1] if index + 1 < len(batch) else None
            try:
                done.append(transact(outgoing, following))
            except MailError as exc:
                return done, exc
        return done, None

    def _reset(self) -> None:
        code, reply = self.command("RSET")
        if not 200 <= code < 300:
            raise SMTPResponseError("RSET", code, reply)

    def ping(self) -> tuple[int, str]:
        return self.command("NOOP")

    def goodbye(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self.close()

    def discard(self) -> None:
        self.close()


def plain_b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


# -- the trio side ------------------------------------------------------------------------------


class AsyncSMTPClient(MailSession[_SMTPConnection]):
    """An SMTP client for trio (smtplib underneath, on worker threads).

    ::

        async with AsyncSMTPClient() as client:
            await client.connect("smtp.example.com", 587)
            await client.login("user@example.com", "password")
            result = await client.send_message(message)

    One connection serves any number of messages; calls from several tasks are served one at a
    time. If the server drops the connection (or a call was cancelled, which closes it), the next
    send connects, negotiates TLS and logs in again by itself, and retries the message once.

    Args:
        local_hostname: the name sent with EHLO (default: this host's FQDN).
        socket_timeout: seconds any single blocking socket operation may take before the
            connection is given up (None: no limit). This is a backstop: trio deadlines and
            cancellation interrupt a blocked call at once whatever this is.
        greeting_timeout: seconds to wait for the server's greeting after the TCP connect (with
            implicit TLS, for the handshake and the greeting); at most ``socket_timeout``.
            Default 15. A server that says nothing usually expects implicit TLS (SMTPS), and
            the error says so. None: only ``socket_timeout`` applies.
        allow_insecure_auth: send credentials (:meth:`login`, :meth:`login_oauth2`) over a
            connection that is not encrypted. By default they are refused with
            :exc:`InsecureAuthError` unless the connection uses TLS (implicit or STARTTLS), so
            that a server, or a man in the middle, that leaves STARTTLS out never sees the
            password. Set it only for a trusted network, such as a development server on
            loopback.

    Leaving ``async with`` (or :meth:`aclose`) sends QUIT and closes the connection.
    """

    _protocol = _SMTP

    def __init__(
        self,
        *,
        local_hostname: str | None = None,
        socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
        greeting_timeout: float | None = DEFAULT_GREETING_TIMEOUT,
        allow_insecure_auth: bool = False,
    ) -> None:
        super().__init__(socket_timeout=socket_timeout, greeting_timeout=greeting_timeout,
                         allow_insecure_auth=allow_insecure_auth)
        if local_hostname is not None:
            check_credential(local_hostname, "local_hostname")
        self._local_hostname = local_hostname
        self._messages_sent = 0
        self._recipients_refused = 0

    async def connect(self, host: str, port: int = 587, *, use_tls: bool | None = None,
                      start_tls: bool | None = None, ssl_context: ssl.SSLContext | None = None,
                      source_address: Address | None = None, tls: TLSArgument = None) -> None:
        await super().connect(host, port, use_tls=use_tls, start_tls=start_tls,
                              ssl_context=ssl_context, source_address=source_address, tls=tls)

    # -- properties ------------------------------------------------------------------------------

    @property
    def extensions(self) -> dict[str, str]:
        """The ESMTP extensions the server announced in its last EHLO reply (lower-case keys)."""
        if self._conn is None:
            return {}
        return dict(self._conn.esmtp_features)

    def statistics(self) -> SMTPStatistics:
        """Counters of connections, reconnections, sent messages and refused recipients."""
        return SMTPStatistics(
            self._connections, self._reconnects, self._messages_sent, self._recipients_refused
        )

    def _build(self, transport: Transport, params: ConnectParams) -> _SMTPConnection:
        # smtplib reads the greeting later, in open_session()
        return _SMTPConnection(transport, local_hostname=self._local_hostname)

    # -- commands --------------------------------------------------------------------------------

    async def login(self, username: str, password: str, *, mechanism: str | None = None) -> None:
        """Authenticate (``AUTH``), once, with one mechanism.

        Args:
            username: the user name (often the e-mail address).
            password: the password (or, with ``mechanism="XOAUTH2"``, an OAuth 2.0 access token).
            mechanism: ``"PLAIN"``, ``"LOGIN"`` or ``"XOAUTH2"``; default: PLAIN if the server
                offers it, else LOGIN. No other mechanism is tried after a refusal (servers delay
                further attempts after a failed one).

        Raises:
            SMTPAuthenticationError: the server refused (``code`` 535 and ``reply`` tell why),
                or does not offer the mechanism (``code`` None).
            InsecureAuthError: the connection is not encrypted (no TLS, no STARTTLS) and the
                client was not made with ``allow_insecure_auth=True``; nothing was sent.
        """
        check_credential(username, "username")
        check_credential(password, "password")
        if mechanism is not None:
            mechanism = mechanism.upper()
            if mechanism not in _MECHANISMS:
                raise ConfigurationError(
                    f"unsupported AUTH mechanism {mechanism!r}; use one of {_MECHANISMS}"
                )
        await self._login(mechanism, username, password)

    async def login_oauth2(self, username: str, access_token: str | TokenProvider, *,
                           mechanism: str = "XOAUTH2") -> None:
        """Authenticate with an OAuth 2.0 access token (Gmail, Outlook), ``AUTH XOAUTH2`` or
        ``AUTH OAUTHBEARER`` (RFC 7628).

        Args:
            username: the user name (the e-mail address).
            access_token: the token, or a *token provider*: an async callable returning a new
                token (a ``str``, or an :class:`OAuth2Token` with its expiry). The client
                calls it to log in, and again when the token is within a minute of its
                expiry at a (re)login, or when the server refused it (then it logs in once
                more with the new token).
            mechanism: ``"XOAUTH2"`` (default) or ``"OAUTHBEARER"``.

        Raises:
            SMTPAuthenticationError: see :meth:`login` (with a provider: the new token was
                refused too).
            InsecureAuthError: see :meth:`login`.
        """
        mechanism = mechanism.upper()
        if mechanism not in _OAUTH_MECHANISMS:
            raise ConfigurationError(f"mechanism must be one of {_OAUTH_MECHANISMS}, not "
                                     f"{mechanism!r}")
        if callable(access_token):
            await self._login(mechanism, username, "", TokenCache(access_token))
        else:
            await self.login(username, access_token, mechanism=mechanism)

    async def noop(self) -> tuple[int, str]:
        """Send NOOP (keeps an idle connection alive); returns the reply code and text."""
        async with self._lock:
            conn = await self._ensure_connected()
            return await self._call(conn.ping)

    async def send_message(self, message: MailMessage) -> SendResult:
        """Send one message to its To, Cc and Bcc recipients.

        Recipients the server refuses while others are accepted are reported in the result
        (:attr:`SendResult.refused`, also logged as a warning); they are never dropped silently.

        Returns:
            The :class:`SendResult` with the reply for every recipient.

        Raises:
            SMTPRecipientsRefused: every recipient was refused, so nothing was sent.
            SMTPResponseError: the server refused the sender or the message data.
            SMTPConnectionError: the connection was lost and could not be re-established.
            MailMessageError: the message is invalid (e.g. no recipient).
        """
        if not isinstance(message, MailMessage):
            raise MailMessageError(f"send_message() takes a MailMessage, not "
                                   f"{type(message).__name__}")
        outgoing = _Outgoing(message)
        async with self._lock:
            (result,) = await self._send([outgoing])
        if not result.sent:
            raise SMTPRecipientsRefused(result)
        return result

    async def send_many(self, messages: Iterable[MailMessage]) -> list[SendResult]:
        """Send several messages over the one connection, in order.

        If the server drops the connection, the client reconnects (TLS and login included) and
        goes on with the message it was sending; a message whose final reply was lost with the
        connection may thus be delivered twice, never zero times. A message whose recipients
        were all refused does not stop the batch: its result has ``sent == False`` and the
        refusals in :attr:`SendResult.refused`.

        Returns:
            One :class:`SendResult` per message, in order.

        Raises:
            SMTPResponseError: the server refused a sender or a message's data (the messages
                before it were sent).
            SMTPConnectionError: the connection was lost twice for the same message.
            MailMessageError: a message is invalid (checked for all before sending any).
        """
        batch = list(messages)
        for message in batch:
            if not isinstance(message, MailMessage):
                raise MailMessageError(
                    f"send_many() takes MailMessage objects, not {type(message).__name__}"
                )
        outgoing = [_Outgoing(message) for message in batch]
        async with self._lock:
            return await self._send(outgoing)

    async def _send(self, batch: list[_Outgoing]) -> list[SendResult]:
        """Send messages in order, a whole run of them per worker-thread call; after a lost
        connection, reconnect and go on with the message that failed (once per message)."""
        results: list[SendResult] = []
        retried = -1
        span = self._span("MAIL") if _tracing.enabled() else None  # one CLIENT span
        with _tracing.ending(span):
            while len(results) < len(batch):
                conn = await self._ensure_connected()
                done, error = await self._call(conn.transact_many, batch[len(results) :],
                                               traced=False)
                for outgoing, (rcpts, final) in zip(batch[len(results) :], done, strict=False):
                    results.append(self._record(outgoing, rcpts, final))
                if error is None:
                    continue
                if not isinstance(error, SMTPConnectionError):
                    if isinstance(error, SMTPProtocolError):
                        self._drop()  # out of step with the server
                    raise error
                self._drop()
                if retried == len(results) or self._params is None:
                    raise error
                retried = len(results)
                logger.info("SMTP connection lost (%s); reconnecting", error)
            if span is not None:
                span.set("trionet.mail.message_count", len(batch))
                span.set("trionet.mail.recipients_refused",
                         sum(len(result.refused) for result in results))
        return results

    def _record(
        self, outgoing: _Outgoing, rcpts: list[RecipientResult], final: tuple[int, str] | None
    ) -> SendResult:
        result = SendResult(
            outgoing.message.message_id or "",
            tuple(rcpts),
            final[0] if final is not None else None,
            final[1] if final is not None else "",
        )
        refused = result.refused
        self._recipients_refused += len(refused)
        if result.sent:
            self._messages_sent += 1
            _metrics.message("mail", "out")
        if refused:
            logger.warning("the SMTP server refused recipients of %s: %s", result.message_id,
                           "; ".join(f"{a}: {c} {t}" for a, (c, t) in refused.items()))
        return result

    async def quit(self) -> None:
        """Say QUIT and close the connection (the same as :meth:`aclose`)."""
        await self.aclose()
