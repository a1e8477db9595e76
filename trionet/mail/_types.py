"""The results of sending mail: plain data, shared by the SMTP client and the errors that carry
them (:class:`~trionet.mail.SMTPRecipientsRefused`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RecipientResult", "SendResult"]


@dataclass(frozen=True)
class RecipientResult:
    """The server's reply to ``RCPT TO`` for one envelope recipient.

    Attributes:
        address: the recipient's address as sent in the envelope.
        code: the reply code (250 when accepted).
        reply: the reply text.
    """

    address: str
    code: int
    reply: str

    @property
    def accepted(self) -> bool:
        """Whether the server accepted this recipient (a 2xx reply)."""
        return 200 <= self.code < 300


@dataclass(frozen=True)
class SendResult:
    """What happened to one message: the reply for every recipient and for the data.

    Attributes:
        message_id: the message's ``Message-ID``.
        recipients: one :class:`RecipientResult` per envelope recipient (To, Cc and Bcc).
        code: the server's final reply code for the message data, or None if the data was not
            sent (every recipient was refused).
        reply: the final reply text (the server's queue id is usually in it), or ``""``.
    """

    message_id: str
    recipients: tuple[RecipientResult, ...]
    code: int | None
    reply: str

    @property
    def sent(self) -> bool:
        """Whether the server took the message for at least one recipient."""
        return self.code is not None and 200 <= self.code < 300

    @property
    def accepted(self) -> list[str]:
        """The recipients the server accepted."""
        return [r.address for r in self.recipients if r.accepted]

    @property
    def refused(self) -> dict[str, tuple[int, str]]:
        """The refused recipients: address -> (reply code, reply text)."""
        return {r.address: (r.code, r.reply) for r in self.recipients if not r.accepted}
