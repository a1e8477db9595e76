"""AsyncIMAPClient against the real Dovecot of the mail_servers fixture (mail sent via Postfix)."""

from __future__ import annotations

import datetime as dt
import email
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from mail_helpers import (
    FaultyProxy,
    SilentServer,
    busy_mail_threads,
    imap_session,
    new_tag,
    simple_message,
    smtp_session,
    wait_for_uids,
)

from trionet.errors import ConfigurationError
from trionet.mail import (
    AsyncIMAPClient,
    Attachment,
    IdleEvent,
    IMAPAuthenticationError,
    IMAPCommandError,
    IMAPConnectionError,
    MailMessage,
    MailMessageError,
    MailNotConnected,
)
from trionet.testing import MailInfo, MailServers, fresh_loopback_address


@asynccontextmanager
async def own_mailbox(imap: AsyncIMAPClient, label: str) -> AsyncIterator[str]:
    """A new mailbox for one test (the servers are shared), deleted afterwards."""
    name = f"{label}-{new_tag()[:12]}"
    await imap.create_mailbox(name)
    try:
        yield name
    finally:
        await imap.select_mailbox("INBOX")
        await imap.delete_mailbox(name)


def structure(raw: bytes) -> list[str]:
    return [part.get_content_type() for part in email.message_from_bytes(raw).walk()]


async def test_big_message_round_trip_through_postfix_and_dovecot(
    mail_servers: MailServers,
) -> None:
    """Text, html, a 100 kB binary and a non-ASCII filename, a non-ASCII subject: sent over
    SMTP, read back over IMAPS with identical bytes and structure; fetching does not mark it
    read."""
    info = mail_servers.info
    tag = new_tag()
    blob = os.urandom(100 * 1024)
    message = MailMessage(
        f"Grüße, Ünïcode ✓ {tag}",
        f"Alice Ä <{info.user('alice').address}>",
        [info.user("bob").address],
        text_content="Hallo Bob ✓\nzweite Zeile\n",
        html_content="<p>Hallo <b>Bob</b> ✓</p>\n",
    )
    message.attachments.append(Attachment("blob.bin", blob, "application/octet-stream"))
    message.attachments.append(Attachment("Übersicht – 報告書.pdf", b"%PDF-1.7\n%\xe2\xe3\n"))
    sent_raw = message.as_bytes()
    async with smtp_session(info) as smtp:
        await smtp.send_message(message)

    async with imap_session(info) as imap:
        (uid,) = await wait_for_uids(imap, f'HEADER Message-ID "{message.message_id}"')
        (received,) = await imap.fetch_messages(f"UID {uid}", limit=None)
        assert received.uid == uid
        assert not received.seen and "\\Seen" not in received.flags
        assert received.subject == message.subject
        assert received.sender == message.sender
        assert received.recipients == message.recipients
        assert received.message_id == message.message_id
        assert received.text_content == message.text_content
        assert received.html_content == message.html_content
        assert [(a.filename, a.content_type, a.content) for a in received.attachments] == [
            ("blob.bin", "application/octet-stream", blob),
            ("Übersicht – 報告書.pdf", "application/pdf", b"%PDF-1.7\n%\xe2\xe3\n"),
        ]
        assert received.raw is not None
        assert structure(received.raw) == structure(sent_raw) == [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "application/octet-stream",
            "application/pdf",
        ]
        # byte for byte, every part's payload is what we sent (boundaries are random per build)
        sent_parts = email.message_from_bytes(sent_raw).walk()
        for ours, theirs in zip(sent_parts, email.message_from_bytes(received.raw).walk(),
                                strict=True):
            assert ours.get_payload(decode=True) == theirs.get_payload(decode=True)
            assert [p for p in ours.get_params() or [] if p[0] != "boundary"] == [
                p for p in theirs.get_params() or [] if p[0] != "boundary"
            ]
        # BODY.PEEK[]: still unread, for this client and for a search
        assert await imap.search(f"UNSEEN UID {uid}") == [uid]
        (again,) = await imap.fetch([uid])
        assert not again.seen
        # unless asked
        (read,) = await imap.fetch([uid], mark_seen=True)
        assert read.seen
        assert await imap.search(f"UNSEEN UID {uid}") == []
        await imap.delete_messages([uid])


async def test_the_seed_example(mail_servers: MailServers) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    tag = new_tag()
    async with smtp_session(info) as smtp:
        await smtp.send_many([simple_message(info, f"seed {tag} {n}") for n in range(3)])

    async with AsyncIMAPClient() as client:
        # Connect and login
        await client.connect(info.host, info.imaps_port, use_tls=True,
                             ssl_context=info.ssl_context())
        await client.login(bob.address, bob.password)
        # Select mailbox
        await client.select_mailbox("INBOX")
        uids = await wait_for_uids(client, f'HEADER Subject "{tag}"', 3)
        # Fetch messages
        messages = await client.fetch_messages(
            criteria=f'UNSEEN HEADER Subject "{tag}"',
            limit=2
        )
        # the newest two (Postfix may deliver a batch in any order)
        assert [m.uid for m in messages] == uids[-2:]
        assert all(m.subject.startswith(f"seed {tag}") and not m.seen for m in messages)
        assert client.statistics().messages_fetched == 2
        await client.delete_messages(await client.search(f'HEADER Subject "{tag}"'))


async def test_flags_move_delete_and_append(mail_servers: MailServers) -> None:
    info = mail_servers.info
    async with imap_session(info, user="alice") as imap, own_mailbox(imap, "Archiv Ü") as box:
        boxes = {b.name: b for b in await imap.list_mailboxes()}
        assert box in boxes and boxes[box].selectable and "INBOX" in boxes
        assert [b.name for b in await imap.list_mailboxes(box)] == [box]

        when = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
        uids = [
            await imap.append(simple_message(info, f"appended {n}"), "INBOX", date=when)
            for n in range(3)
        ]
        assert all(isinstance(uid, int) for uid in uids)
        inbox_uids = [uid for uid in uids if uid is not None]

        await imap.mark_seen(inbox_uids[:2])
        fetched = await imap.fetch(inbox_uids)
        assert [m.seen for m in fetched] == [True, True, False]
        await imap.mark_unseen(inbox_uids[:1])
        await imap.add_flags(inbox_uids[2:], ["\\Flagged", "$Important"])
        fetched = await imap.fetch(inbox_uids)
        assert [m.seen for m in fetched] == [False, True, False]
        assert {"\\Flagged", "$Important"} <= fetched[2].flags
        await imap.remove_flags(inbox_uids[2:], ["\\Flagged"])
        assert "\\Flagged" not in (await imap.fetch(inbox_uids[2:]))[0].flags

        moved = await imap.move(inbox_uids[:2], box)
        assert sorted(moved) == inbox_uids[:2]  # COPYUID: old UID -> new UID
        assert await imap.fetch(inbox_uids[:2]) == []  # gone from INBOX
        copied = await imap.copy(inbox_uids[2:], box)
        assert sorted(copied) == inbox_uids[2:]
        await imap.delete_messages(inbox_uids[2:])

        status = await imap.select_mailbox(box)
        assert status.exists == 3 and status.uidvalidity and status.name == box
        in_box = await imap.fetch_messages("ALL", limit=None)
        assert sorted(m.subject for m in in_box) == ["appended 0", "appended 1", "appended 2"]
        assert sorted(m.uid or 0 for m in in_box) == sorted(moved.values()) + list(copied.values())
        assert all(m.date is not None for m in in_box)
        await imap.delete_messages([in_box[0].uid or 0])
        assert len(await imap.search("ALL")) == 2

        with pytest.raises(IMAPCommandError) as missing:
            await imap.move([in_box[1].uid or 0], f"no-such-box-{new_tag()}")
        assert missing.value.status == "NO"
        assert missing.value.response_code == "TRYCREATE"
        # a refused command leaves the session usable
        assert len(await imap.search("ALL")) == 2

        raw_uid = await imap.append(b"Subject: raw\r\n\r\nraw body\r\n", box, flags=["\\Seen"])
        (raw,) = await imap.fetch([raw_uid or 0])
        assert raw.subject == "raw" and raw.seen and raw.text_content == "raw body\n"


async def test_examine_is_read_only(mail_servers: MailServers) -> None:
    info = mail_servers.info
    async with imap_session(info, mailbox=None) as imap:
        status = await imap.select_mailbox("INBOX", readonly=True)
        assert status.readonly and imap.selected_mailbox == "INBOX"
        with pytest.raises(IMAPCommandError):
            await imap.select_mailbox(f"no-such-box-{new_tag()}")


async def test_wrong_password(mail_servers: MailServers) -> None:
    info = mail_servers.info
    async with AsyncIMAPClient() as imap:
        await imap.connect(
            info.host,
            info.imaps_port,
            use_tls=True,
            ssl_context=info.ssl_context(),
            source_address=(fresh_loopback_address(), 0),
        )
        with pytest.raises(IMAPAuthenticationError) as refused:
            await imap.login(info.user("bob").address, "wrong-password")
        assert refused.value.response_code == "AUTHENTICATIONFAILED"
        assert "Authentication failed" in refused.value.reply
        assert imap.username is None


async def test_starttls_and_logindisabled(mail_servers: MailServers) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    # from another loopback address Dovecot treats us as remote: plaintext login is disabled
    # (the client would refuse anyway; allowed here to see the server's LOGINDISABLED)
    async with AsyncIMAPClient(allow_insecure_auth=True) as imap:
        await imap.connect(
            info.host, info.imap_port, start_tls=False,
            source_address=(fresh_loopback_address(), 0),
        )
        assert not imap.tls and "LOGINDISABLED" in imap.capabilities
        with pytest.raises(IMAPAuthenticationError, match="LOGINDISABLED") as refused:
            await imap.login(bob.address, bob.password)
        assert refused.value.fault == "local"
    async with AsyncIMAPClient() as imap:
        await imap.connect(
            info.host, info.imap_port, ssl_context=info.ssl_context(),
            source_address=(fresh_loopback_address(), 0),
        )
        assert imap.tls and "LOGINDISABLED" not in imap.capabilities
        with pytest.raises(IMAPAuthenticationError, match=r"does not offer .* XOAUTH2"):
            await imap.login_oauth2(bob.address, "token")
        await imap.login(bob.address, bob.password)
        assert "MOVE" in imap.capabilities  # refreshed after login
        with pytest.raises(IMAPAuthenticationError, match="already logged in"):
            await imap.login(bob.address, bob.password)


async def test_untrusted_certificate_is_refused(mail_servers: MailServers) -> None:
    info = mail_servers.info
    untrusting = ssl.create_default_context()
    for port, implicit in ((info.imap_port, False), (info.imaps_port, True)):
        async with AsyncIMAPClient() as imap:
            with pytest.raises(IMAPConnectionError) as refused:
                await imap.connect(info.host, port, use_tls=implicit, ssl_context=untrusting)
            assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
            assert not imap.connected


async def deliver_later(info: MailInfo, subject: str, delay: float) -> None:
    await trio.sleep(delay)
    async with smtp_session(info) as smtp:
        await smtp.send_message(simple_message(info, subject))


async def test_idle_sees_a_delivery(mail_servers: MailServers) -> None:
    info = mail_servers.info
    tag = new_tag()
    events: list[IdleEvent] = []
    async with imap_session(info) as imap, trio.open_nursery() as nursery:
        nursery.start_soon(deliver_later, info, f"idle {tag}", 0.2)
        with trio.fail_after(15):
            async for event in imap.idle():
                events.append(event)
                if event.kind == "exists":
                    found = await imap.fetch_messages(f'HEADER Subject "idle {tag}"')
                    if found:
                        break
        assert found[0].subject == f"idle {tag}"
        assert events[-1].kind == "exists" and events[-1].number
        await imap.delete_messages([found[0].uid or 0])


async def idle_quietly(imap: AsyncIMAPClient, scope: trio.CancelScope, renew_after: float
                       ) -> None:
    with scope:
        async for event in imap.idle(renew_after=renew_after):
            pytest.fail(f"nothing should happen in an idle test mailbox, got {event}")


async def wait_for_renewals(imap: AsyncIMAPClient, count: int) -> None:
    with trio.fail_after(15):
        while True:
            if imap.statistics().idle_renewals >= count:
                return
            await trio.sleep(0.01)


async def test_idle_renews_and_cancellation_sends_done(mail_servers: MailServers) -> None:
    info = mail_servers.info
    async with imap_session(info) as imap, own_mailbox(imap, "quiet") as box:
        await imap.select_mailbox(box)  # nothing is delivered here
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            nursery.start_soon(idle_quietly, imap, scope, 0.1)
            await wait_for_renewals(imap, 1)  # (not a fixed wait: a loaded machine is slow)
            scope.cancel()
        stats = imap.statistics()
        assert stats.idle_renewals >= 1  # IDLE was ended with DONE and issued again
        # cancelled while idling: DONE was sent and the same connection goes on
        assert imap.connected and stats.connections == 1
        assert await imap.search("ALL") == []
        assert imap.statistics().connections == 1
    assert busy_mail_threads() == []


async def wait_for_a_blocked_call() -> None:
    with trio.fail_after(15):
        while True:
            if busy_mail_threads():
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize("exchange", ["first IDLE", "renewal"])
async def test_idle_cancelled_during_an_exchange_sends_done(
    mail_servers: MailServers, exchange: str
) -> None:
    """Cancelled while an IDLE exchange runs on its thread (IDLE and its "+", or a renewal's
    DONE and OK; held here by a frozen relay), the loop lets it finish, ends IDLE with DONE and
    keeps the connection (it used to shut the socket down and drop the connection)."""
    info = mail_servers.info
    bob = info.user("bob")
    proxy = FaultyProxy(info.host, info.imaps_port)
    async with trio.open_nursery() as servers:
        await servers.start(proxy.serve)
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, proxy.port, use_tls=True,
                               ssl_context=info.ssl_context())
            await imap.login(bob.address, bob.password)
            async with own_mailbox(imap, "held") as box:
                await imap.select_mailbox(box)
                async with trio.open_nursery() as nursery:
                    scope = trio.CancelScope()
                    if exchange == "first IDLE":
                        proxy.freeze()
                        nursery.start_soon(idle_quietly, imap, scope, 0.05)
                    else:
                        nursery.start_soon(idle_quietly, imap, scope, 0.05)
                        await wait_for_renewals(imap, 1)
                        proxy.freeze()
                    await wait_for_a_blocked_call()  # an exchange waits for the relay
                    scope.cancel()
                    await trio.lowlevel.checkpoint()  # (the old code shut the socket down here)
                    proxy.thaw()
                assert scope.cancelled_caught
                assert imap.connected
                assert await imap.search("ALL") == []
                stats = imap.statistics()
                assert stats.connections == 1 and stats.reconnects == 0
                assert proxy.connections == 1
        servers.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_idle_reconnects_after_bye(mail_servers: MailServers) -> None:
    """``doveadm kick`` makes Dovecot say BYE; the idle loop logs in again and goes on."""
    info = mail_servers.info
    doveadm = ["doveadm", "-c", str(mail_servers.directory / "dovecot" / "dovecot.conf")]

    async def kick() -> None:
        await trio.sleep(0.2)
        await trio.run_process([*doveadm, "kick", info.user("bob").address],
                               capture_stdout=True)

    async def append_to(box: str) -> None:
        async with imap_session(info, mailbox=None) as other:
            await other.append(simple_message(info, "after bye"), box)

    kinds: list[str] = []
    async with imap_session(info) as imap, own_mailbox(imap, "kicked") as box:
        await imap.select_mailbox(box)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kick)
            with trio.fail_after(15):
                async for event in imap.idle():
                    kinds.append(event.kind)
                    if event.kind == "reconnected":
                        nursery.start_soon(append_to, box)
                    if event.kind == "exists":
                        break
        assert kinds[0] == "reconnected" and kinds[-1] == "exists"
        stats = imap.statistics()
        assert stats.reconnects == 1 and stats.connections == 2
        assert imap.selected_mailbox == box
        (message,) = await imap.fetch_messages("ALL")
        assert message.subject == "after bye"


async def test_idle_needs_a_selected_mailbox(mail_servers: MailServers) -> None:
    async with imap_session(mail_servers.info, mailbox=None) as imap:
        with pytest.raises(IMAPCommandError, match="select a mailbox"):
            async for _ in imap.idle():
                pass
        with pytest.raises(ConfigurationError):
            async for _ in imap.idle(renew_after=0):
                pass


async def test_deadline_on_a_silent_server_is_prompt() -> None:
    for server in (SilentServer(), SilentServer.greeting_then_silence(b"* OK hello\r\n")):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            async with AsyncIMAPClient(socket_timeout=None) as imap:
                with pytest.raises(trio.TooSlowError):
                    with trio.fail_after(0.3):
                        await imap.connect("127.0.0.1", server.port, use_tls=False)
                assert not server.released.is_set()
                assert not imap.connected
            assert busy_mail_threads() == []
            server.release()
            nursery.cancel_scope.cancel()


async def test_deadline_mid_command_then_reconnect(mail_servers: MailServers) -> None:
    """A real IMAPS session through a relay that freezes: the deadline ends the blocked fetch
    promptly and closes the connection; the next call connects, logs in and selects again."""
    info = mail_servers.info
    bob = info.user("bob")
    proxy = FaultyProxy(info.host, info.imaps_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncIMAPClient(socket_timeout=None) as imap:
            await imap.connect(info.host, proxy.port, use_tls=True,
                               ssl_context=info.ssl_context())
            await imap.login(bob.address, bob.password)
            await imap.select_mailbox("INBOX")
            with trio.CancelScope() as scope:
                scope.cancel()  # cancelled before the call: nothing is sent, the session stays
                await imap.search("ALL")
            assert [imap.connected] == [True]

            proxy.freeze()
            with trio.move_on_after(0.3) as deadline:
                await imap.fetch_messages("ALL", limit=5)
            assert deadline.cancelled_caught
            assert not imap.connected
            assert busy_mail_threads() == []
            proxy.thaw()

            assert isinstance(await imap.search("ALL"), list)
            assert imap.statistics().reconnects == 1 and proxy.connections == 2
            assert imap.selected_mailbox == "INBOX" and imap.username == bob.address
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_misuse_is_reported_clearly(mail_servers: MailServers) -> None:
    async with AsyncIMAPClient() as imap:
        with pytest.raises(MailNotConnected):
            await imap.select_mailbox("INBOX")
        with pytest.raises(ConfigurationError):
            await imap.connect("127.0.0.1", 993, start_tls=True)
    async with imap_session(mail_servers.info) as imap:
        with pytest.raises(MailMessageError):
            await imap.fetch([0])
        with pytest.raises(MailMessageError):
            await imap.mark_seen([])
        with pytest.raises(MailMessageError):
            await imap.add_flags([1], ["bad flag"])
        with pytest.raises(ConfigurationError):
            await imap.search("SUBJECT ü")
        with pytest.raises(ConfigurationError):
            await imap.fetch_messages(limit=-1)
        with pytest.raises(ConfigurationError):
            await imap.append(b"x", date=dt.datetime(2026, 1, 1))  # naive
        with pytest.raises(IMAPCommandError) as bad:
            await imap.search("NOT-A-SEARCH-KEY")
        assert bad.value.status == "BAD"
        assert await imap.fetch([]) == []
