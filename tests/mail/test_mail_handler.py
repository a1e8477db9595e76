"""MailHandler.forward_with_attachments (the seed's example) and gather()."""

from __future__ import annotations

import os

import pytest
import trio
from mail_helpers import busy_mail_threads, imap_session, new_tag, wait_for_uids

from trionet.mail import (
    Attachment,
    MailHandler,
    MailMessage,
    MailNotConnected,
    gather,
)
from trionet.testing import MailServers


class StoredAttachments(MailHandler):
    """Attachment contents live in a store (think object storage); the message only names them.

    Every download waits until all downloads of the message have started, which only works out
    if they really run in parallel.
    """

    def __init__(self, store: dict[str, bytes], expected: int) -> None:
        super().__init__()
        self.store = store
        self.started = 0
        self.all_started = trio.Event()
        self.expected = expected

    async def download_attachment(self, attachment: Attachment) -> Attachment:
        self.started += 1
        if self.started == self.expected:
            self.all_started.set()
        await self.all_started.wait()
        return Attachment(attachment.filename, self.store[attachment.filename],
                          attachment.content_type)


async def test_forward_with_attachments(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice, bob = info.user("alice"), info.user("bob")
    tag = new_tag()
    store = {"big.bin": os.urandom(50_000), "Übersicht.pdf": b"%PDF-1.7 small"}
    original = MailMessage(
        f"Quarterly numbers {tag}",
        "boss@example.test",
        [alice.address],
        text_content="Numbers attached.\n",
        attachments=[Attachment(name, b"", None) for name in store],
    )
    handler = StoredAttachments(store, expected=len(store))
    async with handler:
        await handler.smtp.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
        await handler.smtp.login(alice.address, alice.password)
        with trio.fail_after(10):
            result = await handler.forward_with_attachments(original, bob.address)
        assert result.sent and result.accepted == [bob.address]
    assert not handler.smtp.connected

    async with imap_session(info) as imap:
        (uid,) = await wait_for_uids(imap, f'HEADER Subject "Fwd: Quarterly numbers {tag}"')
        (forward,) = await imap.fetch([uid])
        await imap.delete_messages([uid])
    assert forward.sender == alice.address
    assert forward.text_content == "Numbers attached.\n"
    assert [(a.filename, a.content_type, a.content) for a in forward.attachments] == [
        ("big.bin", "application/octet-stream", store["big.bin"]),
        ("Übersicht.pdf", "application/pdf", store["Übersicht.pdf"]),
    ]
    assert busy_mail_threads() == []


async def test_forward_a_fetched_message_as_is(mail_servers: MailServers) -> None:
    """The default download_attachment keeps what IMAP fetched."""
    info = mail_servers.info
    alice, bob = info.user("alice"), info.user("bob")
    tag = new_tag()
    async with MailHandler() as handler:
        imap, smtp = handler.imap, handler.smtp
        await imap.connect(info.host, info.imaps_port, use_tls=True,
                           ssl_context=info.ssl_context())
        await imap.login(bob.address, bob.password)
        await imap.select_mailbox("INBOX")
        uid = await imap.append(
            MailMessage(f"to forward {tag}", alice.address, [bob.address], text_content="fyi\n",
                        attachments=[Attachment("a.txt", b"attached text\n", "text/plain")]),
        )
        (message,) = await imap.fetch([uid or 0])
        await smtp.connect(info.host, info.smtps_port, use_tls=True,
                           ssl_context=info.ssl_context())
        await smtp.login(bob.address, bob.password)
        await handler.forward_with_attachments(message, alice.address)
        await imap.delete_messages([uid or 0])
    async with imap_session(info, user="alice") as alice_imap:
        (fwd_uid,) = await wait_for_uids(alice_imap, f'HEADER Subject "Fwd: to forward {tag}"')
        (forward,) = await alice_imap.fetch([fwd_uid])
        await alice_imap.delete_messages([fwd_uid])
    assert [(a.filename, a.content) for a in forward.attachments] == [
        ("a.txt", b"attached text\n")
    ]


async def test_forward_needs_a_logged_in_smtp_client() -> None:
    async with MailHandler() as handler:
        with pytest.raises(MailNotConnected, match="log the SMTP client in"):
            await handler.forward_with_attachments(
                MailMessage("s", "a@example.test", ["b@example.test"]), "c@example.test"
            )


async def test_gather_returns_in_order_and_unwraps_a_single_error() -> None:
    async def value(n: int) -> int:
        await trio.sleep(0.01 * (3 - n))
        return n

    assert await gather(*[lambda n=n: value(n) for n in range(3)]) == [0, 1, 2]
    assert await gather() == []

    async def fails() -> int:
        raise ValueError("broken download")

    async def never() -> int:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(ValueError, match="broken download"):
        await gather(never, fails)
