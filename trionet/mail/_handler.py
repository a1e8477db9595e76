"""MailHandler: the seed's "handle attachments efficiently" example, on trio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from .._util import reraise_single
from ._errors import MailNotConnected
from ._imap import AsyncIMAPClient
from ._message import Attachment, MailMessage
from ._smtp import AsyncSMTPClient, SendResult

__all__ = ["MailHandler", "gather"]

T = TypeVar("T")


async def gather(*calls: Callable[[], Awaitable[T]]) -> list[T]:
    """Run the calls concurrently in a nursery and return their results in order.

    The trio counterpart of ``asyncio.gather``: if one call raises, the others are cancelled and
    that error propagates as itself (not wrapped in an :class:`ExceptionGroup`, unless several
    calls failed at once).
    """
    results: dict[int, T] = {}

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        results[index] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run, index, call)
    except BaseExceptionGroup as group:
        reraise_single(group)
    return [results[index] for index in range(len(calls))]


class MailHandler:
    """An IMAP client and an SMTP client, with the seed's ``forward_with_attachments``.

    Subclass it and override :meth:`download_attachment` to fetch attachment contents from
    wherever they live; the default returns each attachment as it is (a message fetched with
    :meth:`AsyncIMAPClient.fetch_messages` already carries its attachments' bytes)::

        class Forwarder(MailHandler):
            async def download_attachment(self, attachment):
                return attachment

        async with Forwarder() as handler:
            await handler.smtp.connect("smtp.example.com", 587)
            await handler.smtp.login("me@example.com", "password")
            await handler.forward_with_attachments(message, "you@example.com")

    ``async with`` closes both clients at the end.

    Args:
        imap: the IMAP client to use (a new :class:`AsyncIMAPClient` if None).
        smtp: the SMTP client to use (a new :class:`AsyncSMTPClient` if None).
    """

    def __init__(
        self, *, imap: AsyncIMAPClient | None = None, smtp: AsyncSMTPClient | None = None
    ) -> None:
        self.imap = imap if imap is not None else AsyncIMAPClient()
        self.smtp = smtp if smtp is not None else AsyncSMTPClient()

    async def __aenter__(self) -> MailHandler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both clients (LOGOUT and QUIT, each bounded to a few seconds)."""
        try:
            await self.smtp.aclose()
        finally:
            await self.imap.aclose()

    async def download_attachment(self, attachment: Attachment) -> Attachment:
        """Return the attachment, with its content, ready to be sent again.

        Override this to download the content (from object storage, a URL, ...). Calls for the
        attachments of one message run concurrently.
        """
        return attachment

    async def forward_with_attachments(self, message: MailMessage, forward_to: str
                                       ) -> SendResult:
        """Forward ``message`` with its text and attachments to ``forward_to``.

        The attachments are downloaded in parallel (:meth:`download_attachment`); the forward is
        sent from the SMTP client's login name, with the subject ``"Fwd: " + subject``.

        Raises:
            MailNotConnected: the SMTP client has not logged in (the sender would be unknown).
            MailError: sending failed (see :meth:`AsyncSMTPClient.send_message`).
        """
        sender = self.smtp.username
        if sender is None:
            raise MailNotConnected("log the SMTP client in first: the forward is sent as its user")
        attachments: Sequence[Attachment] = await gather(
            *[_bind(self.download_attachment, att) for att in message.attachments]
        )
        forward = MailMessage(
            subject=f"Fwd: {message.subject}",
            sender=sender,
            recipients=[forward_to],
            text_content=message.text_content,
            attachments=list(attachments),
        )
        return await self.smtp.send_message(forward)


def _bind(fn: Callable[[Attachment], Awaitable[Attachment]], attachment: Attachment
          ) -> Callable[[], Awaitable[Attachment]]:
    return lambda: fn(attachment)
