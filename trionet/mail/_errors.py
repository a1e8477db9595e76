"""Mail errors: subclasses of :class:`trionet.errors.MailError`, :class:`~trionet.errors.SMTPError`
and :class:`~trionet.errors.IMAPError`.

Each concrete error belongs to one protocol (SMTP or IMAP) *and* to one kind, so that callers can
catch either way::

    MailError
    ├── MailConnectionError         the server could not be reached, or the connection broke
    │                               (+ trionet.errors.ConnectionFailure)
    │   └── MailNotConnected        the client has no connection (our side's fault)
    ├── MailAuthenticationError     the server refused the credentials (reply kept)
    │   └── InsecureAuthError       we refused to send them over an unencrypted connection
    ├── MailCommandError            the server refused a command (reply kept)
    ├── MailProtocolError           the server sent something we cannot understand
    ├── MailMessageError            a MailMessage / Attachment is invalid (also ValueError)
    ├── SMTPError (code)
    │   ├── SMTPConnectionError     (+ MailConnectionError)
    │   ├── SMTPAuthenticationError (+ MailAuthenticationError)
    │   ├── SMTPResponseError       (+ MailCommandError)
    │   │   └── SMTPRecipientsRefused  (refused, result)
    │   └── SMTPProtocolError       (+ MailProtocolError)
    └── IMAPError
        ├── IMAPConnectionError     (+ MailConnectionError)
        ├── IMAPAuthenticationError (+ MailAuthenticationError)
        ├── IMAPCommandError        (+ MailCommandError)
        └── IMAPProtocolError       (+ MailProtocolError)
"""

from __future__ import annotations

from ..errors import ConnectionFailure, Fault, IMAPError, MailError, SMTPError
from ._types import SendResult

__all__ = [
    "IMAPAuthenticationError",
    "IMAPCommandError",
    "IMAPConnectionError",
    "IMAPProtocolError",
    "InsecureAuthError",
    "MailAuthenticationError",
    "MailCommandError",
    "MailConnectionError",
    "MailMessageError",
    "MailNotConnected",
    "MailProtocolError",
    "SMTPAuthenticationError",
    "SMTPConnectionError",
    "SMTPProtocolError",
    "SMTPRecipientsRefused",
    "SMTPResponseError",
]


# -- kinds (protocol-independent) ---------------------------------------------------------------


class MailConnectionError(MailError, ConnectionFailure):
    """The mail server could not be reached, or the connection to it broke."""


class MailNotConnected(MailConnectionError):
    """An operation needs a connection and the client has none (call ``connect()`` first)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, fault="local")


class MailAuthenticationError(MailError):
    """The server refused the credentials (or the authentication mechanism).

    Attributes:
        reply: the server's reply text (without the reply code).
    """

    reply: str


class InsecureAuthError(MailAuthenticationError):
    """The client refused to send credentials over a connection that is not encrypted.

    ``login()`` and ``login_oauth2()`` (and the login repeated after a reconnection) send the
    password or token only over TLS (implicit TLS or STARTTLS), unless the client was made with
    ``allow_insecure_auth=True``. Nothing secret was sent when this is raised. ``fault`` is
    ``"local"``; ``reply`` is empty (the server was not asked).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, fault="local")
        self.reply = ""


class MailCommandError(MailError):
    """The server answered a command with a refusal (SMTP 4xx/5xx, IMAP ``NO``/``BAD``).

    Attributes:
        command: the command that was refused (``"MAIL FROM"``, ``"UID MOVE"``, ...).
        reply: the server's reply text.
    """

    command: str
    reply: str


class MailProtocolError(MailError):
    """The server sent something that does not follow the protocol."""


class MailMessageError(MailError, ValueError):
    """A :class:`~trionet.mail.MailMessage` or :class:`~trionet.mail.Attachment` is invalid."""

    def __init__(self, message: str) -> None:
        super().__init__(message, fault="local")


# -- SMTP ---------------------------------------------------------------------------------------


class SMTPConnectionError(SMTPError, MailConnectionError):
    """The SMTP server could not be reached, the TLS handshake failed, or the connection broke."""


class SMTPAuthenticationError(SMTPError, MailAuthenticationError):
    """The SMTP server refused ``AUTH`` (typically ``535 5.7.8``).

    Attributes:
        code: the reply code (``None`` when refused locally, e.g. an unsupported mechanism).
        reply: the reply text.
    """

    def __init__(self, message: str, *, code: int | None, reply: str) -> None:
        super().__init__(message, code=code)
        self.reply = reply


class SMTPResponseError(SMTPError, MailCommandError):
    """The SMTP server answered a command with an unexpected or negative reply.

    Attributes:
        code: the reply code.
        command: the command, e.g. ``"MAIL FROM"`` or ``"DATA"``.
        reply: the reply text.
    """

    def __init__(self, command: str, code: int, reply: str) -> None:
        super().__init__(f"{command} refused: {code} {reply}", code=code)
        self.command = command
        self.reply = reply


class SMTPRecipientsRefused(SMTPResponseError):
    """The server refused every recipient of a message, so nothing was sent.

    Attributes:
        refused: address -> (reply code, reply text), for every recipient.
        result: the :class:`~trionet.mail.SendResult` with the per-recipient replies.
    """

    def __init__(self, result: SendResult) -> None:
        refused = {r.address: (r.code, r.reply) for r in result.recipients if not r.accepted}
        first_code, first_reply = next(iter(refused.values()), (554, "no recipients"))
        super().__init__("RCPT TO", first_code, first_reply)
        details = "; ".join(f"{addr}: {code} {text}" for addr, (code, text) in refused.items())
        self.args = (f"every recipient was refused: {details}",)
        self.refused = refused
        self.result = result


class SMTPProtocolError(SMTPError, MailProtocolError):
    """The SMTP server's reply could not be understood."""


# -- IMAP ---------------------------------------------------------------------------------------


class IMAPConnectionError(IMAPError, MailConnectionError):
    """The IMAP server could not be reached, the TLS handshake failed, or the connection broke
    (including a ``BYE`` from the server)."""


class IMAPAuthenticationError(IMAPError, MailAuthenticationError):
    """The IMAP server refused ``LOGIN`` / ``AUTHENTICATE``.

    Attributes:
        response_code: the bracketed response code, e.g. ``"AUTHENTICATIONFAILED"`` (or None).
        reply: the server's reply text.
    """

    def __init__(self, message: str, *, response_code: str | None, reply: str,
                 fault: Fault = "remote") -> None:
        super().__init__(message, fault=fault)
        self.response_code = response_code
        self.reply = reply


class IMAPCommandError(IMAPError, MailCommandError):
    """The IMAP server answered ``NO`` or ``BAD`` (or the command needs a missing capability).

    Attributes:
        command: the command, e.g. ``"UID MOVE"``.
        status: ``"NO"``, ``"BAD"``, or ``""`` when refused locally.
        response_code: the bracketed response code, e.g. ``"TRYCREATE"`` (or None).
        reply: the server's reply text.
    """

    def __init__(self, command: str, status: str, reply: str, *,
                 response_code: str | None = None, fault: Fault = "remote") -> None:
        label = f"{status} " if status else ""
        super().__init__(f"{command} failed: {label}{reply}", fault=fault)
        self.command = command
        self.status = status
        self.response_code = response_code
        self.reply = reply


class IMAPProtocolError(IMAPError, MailProtocolError):
    """The IMAP server's response could not be parsed."""
