"""Mail on trio: :class:`MailMessage` / :class:`Attachment`, an SMTP and an IMAP client.

The clients keep mtaio's names and call shapes (``AsyncSMTPClient``, ``AsyncIMAPClient``,
``connect``, ``login``, ``send_message``, ``select_mailbox``, ``fetch_messages``) and run the
standard library's smtplib and imaplib on worker threads, one call at a time per connection, so
that a trio deadline or cancellation interrupts a blocked call at once and no thread outlives the
call that started it::

    from trionet.mail import AsyncSMTPClient, MailMessage, Attachment

    async with AsyncSMTPClient() as client:
        await client.connect("smtp.example.com", 587)
        await client.login("user@example.com", "password")
        message = MailMessage(
            subject="Report",
            sender="user@example.com",
            recipients=["boss@example.com"],
            text_content="Attached.",
        )
        message.attachments.append(Attachment("report.pdf", pdf_bytes, "application/pdf"))
        await client.send_message(message)

See ``docs/mail.rst`` for the whole tour.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ..errors import IMAPError as IMAPError, MailError as MailError, SMTPError as SMTPError
from ._errors import (
    IMAPAuthenticationError as IMAPAuthenticationError,
    IMAPCommandError as IMAPCommandError,
    IMAPConnectionError as IMAPConnectionError,
    IMAPProtocolError as IMAPProtocolError,
    InsecureAuthError as InsecureAuthError,
    MailAuthenticationError as MailAuthenticationError,
    MailCommandError as MailCommandError,
    MailConnectionError as MailConnectionError,
    MailMessageError as MailMessageError,
    MailNotConnected as MailNotConnected,
    MailProtocolError as MailProtocolError,
    SMTPAuthenticationError as SMTPAuthenticationError,
    SMTPConnectionError as SMTPConnectionError,
    SMTPProtocolError as SMTPProtocolError,
    SMTPRecipientsRefused as SMTPRecipientsRefused,
    SMTPResponseError as SMTPResponseError,
)
from ._handler import MailHandler as MailHandler, gather as gather
from ._imap import AsyncIMAPClient as AsyncIMAPClient, IMAPStatistics as IMAPStatistics
from ._imap_protocol import (
    IdleEvent as IdleEvent,
    MailboxInfo as MailboxInfo,
    MailboxStatus as MailboxStatus,
)
from ._message import (
    Attachment as Attachment,
    MailMessage as MailMessage,
    parse_message as parse_message,
)
from ._oauth import OAuth2Token as OAuth2Token, TokenProvider as TokenProvider
from ._outbox import (
    MemoryOutbox as MemoryOutbox,
    Outbox as Outbox,
    OutboxEntry as OutboxEntry,
    OutboxSender as OutboxSender,
    is_transient as is_transient,
)
from ._send import send as send
from ._smtp import AsyncSMTPClient as AsyncSMTPClient, SMTPStatistics as SMTPStatistics
from ._types import RecipientResult as RecipientResult, SendResult as SendResult
from ._watch import (
    Checkpoint as Checkpoint,
    CheckpointStore as CheckpointStore,
    FileCheckpointStore as FileCheckpointStore,
    MailboxWatcher as MailboxWatcher,
    MemoryCheckpointStore as MemoryCheckpointStore,
)

__all__ = [
    "AsyncIMAPClient",
    "AsyncSMTPClient",
    "Attachment",
    "Checkpoint",
    "CheckpointStore",
    "FileCheckpointStore",
    "IMAPAuthenticationError",
    "IMAPCommandError",
    "IMAPConnectionError",
    "IMAPError",
    "IMAPProtocolError",
    "IMAPStatistics",
    "IdleEvent",
    "InsecureAuthError",
    "MailAuthenticationError",
    "MailCommandError",
    "MailConnectionError",
    "MailError",
    "MailHandler",
    "MailMessage",
    "MailMessageError",
    "MailNotConnected",
    "MailProtocolError",
    "MailboxInfo",
    "MailboxStatus",
    "MailboxWatcher",
    "MemoryCheckpointStore",
    "MemoryOutbox",
    "OAuth2Token",
    "Outbox",
    "OutboxEntry",
    "OutboxSender",
    "RecipientResult",
    "SMTPAuthenticationError",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPRecipientsRefused",
    "SMTPResponseError",
    "SMTPStatistics",
    "SendResult",
    "TokenProvider",
    "gather",
    "is_transient",
    "parse_message",
    "send",
]

_fix_public_modules(globals())
