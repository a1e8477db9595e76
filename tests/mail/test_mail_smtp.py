"""AsyncSMTPClient against the real Postfix (+ Dovecot SASL) of the mail_servers fixture."""

from __future__ import annotations

import os
import ssl

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

from trionet.errors import ConfigurationError, MailError, SMTPError
from trionet.mail import (
    AsyncSMTPClient,
    Attachment,
    MailAuthenticationError,
    MailConnectionError,
    MailMessage,
    MailMessageError,
    MailNotConnected,
    SMTPAuthenticationError,
    SMTPConnectionError,
    SMTPRecipientsRefused,
)
from trionet.testing import MailServers, fresh_loopback_address


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_login_and_send(mail_servers: MailServers, mechanism: str) -> None:
    info = mail_servers.info
    alice, bob = info.user("alice"), info.user("bob")
    tag = new_tag()
    async with AsyncSMTPClient() as client:
        assert [client.username] == [None]
        await client.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
        assert client.tls  # upgraded with STARTTLS because the server offered it
        assert "auth" in client.extensions
        await client.login(alice.address, alice.password, mechanism=mechanism)
        assert client.username == alice.address
        result = await client.send_message(simple_message(info, f"{mechanism} {tag}"))
    assert not client.connected
    assert result.sent and result.code == 250 and "queued" in result.reply
    assert result.accepted == [bob.address] and result.refused == {}
    async with imap_session(info) as imap:
        await wait_for_uids(imap, f'HEADER Subject "{tag}"')
    assert busy_mail_threads() == []


async def test_implicit_tls(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    async with AsyncSMTPClient() as client:
        await client.connect(
            info.host, info.smtps_port, use_tls=True, ssl_context=info.ssl_context()
        )
        assert client.tls
        await client.login(alice.address, alice.password)
        assert (await client.noop())[0] == 250


async def test_wrong_password_is_refused_with_535(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    async with AsyncSMTPClient() as client:
        await client.connect(
            info.host,
            info.smtp_port,
            ssl_context=info.ssl_context(),
            source_address=(fresh_loopback_address(), 0),
        )
        with pytest.raises(SMTPAuthenticationError) as refused:
            await client.login(alice.address, "wrong-password")
        assert client.username is None
        assert client.connected  # a refused login leaves the session usable
    error = refused.value
    assert error.code == 535
    assert error.reply.startswith("5.7.8")
    assert isinstance(error, MailAuthenticationError | SMTPError | MailError)


async def test_untrusted_certificate_is_refused(mail_servers: MailServers) -> None:
    info = mail_servers.info
    untrusting = ssl.create_default_context()  # the system CAs do not know the test CA
    for port, implicit in ((info.smtp_port, False), (info.smtps_port, True)):
        async with AsyncSMTPClient() as client:
            with pytest.raises(SMTPConnectionError) as refused:
                await client.connect(info.host, port, use_tls=implicit, ssl_context=untrusting)
            assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
            assert "certificate" in str(refused.value)
            assert not client.connected


async def test_no_auth_before_starttls(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    # (the client would refuse anyway; allowed here to see what the server offers)
    async with AsyncSMTPClient(allow_insecure_auth=True) as client:
        await client.connect(
            info.host,
            info.smtp_port,
            start_tls=False,
            source_address=(fresh_loopback_address(), 0),
        )
        assert not client.tls
        with pytest.raises(SMTPAuthenticationError, match="after STARTTLS") as refused:
            await client.login(alice.address, alice.password)
        assert refused.value.code is None  # refused here: nothing was sent
        with pytest.raises(SMTPAuthenticationError, match="XOAUTH2"):
            await client.login_oauth2(alice.address, "token")


async def test_xoauth2_not_offered(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    async with AsyncSMTPClient() as client:
        await client.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
        with pytest.raises(SMTPAuthenticationError, match="does not offer AUTH XOAUTH2"):
            await client.login_oauth2(alice.address, "ya29.token")
        with pytest.raises(ConfigurationError):
            await client.login(alice.address, "pw", mechanism="CRAM-MD5")


async def test_refused_recipients_are_reported(mail_servers: MailServers) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    tag = new_tag()
    bad = "someone@[300.1.1.1]"  # Postfix: 501 5.1.3 Bad recipient address syntax
    async with smtp_session(info) as client:
        message = simple_message(info, f"partly refused {tag}")
        message.cc.append(bad)
        result = await client.send_message(message)
        assert result.sent
        assert result.accepted == [bob.address]
        assert result.refused == {bad: (501, "5.1.3 Bad recipient address syntax")}
        assert client.statistics().recipients_refused == 1

        nobody = MailMessage("nobody", info.user("alice").address, [bad], text_content="x")
        with pytest.raises(SMTPRecipientsRefused) as refused:
            await client.send_message(nobody)
        assert refused.value.refused == {bad: (501, "5.1.3 Bad recipient address syntax")}
        assert refused.value.code == 501 and not refused.value.result.sent
        # the session goes on after a refused transaction
        assert (await client.send_message(simple_message(info, f"after {tag}"))).sent
        # in a batch, a fully refused message is reported and the others are sent
        results = await client.send_many(
            [simple_message(info, f"batch {tag}"), nobody, simple_message(info, f"batch {tag}")]
        )
        assert [r.sent for r in results] == [True, False, True]
        assert results[1].refused == {bad: (501, "5.1.3 Bad recipient address syntax")}


async def test_unauthenticated_recipients_are_all_refused(mail_servers: MailServers) -> None:
    info = mail_servers.info
    async with AsyncSMTPClient() as client:
        await client.connect(
            info.host,
            info.smtp_port,
            ssl_context=info.ssl_context(),
            source_address=(fresh_loopback_address(), 0),
        )
        with pytest.raises(SMTPRecipientsRefused) as refused:
            await client.send_message(simple_message(info, "not logged in"))
    ((address, (code, reply)),) = refused.value.refused.items()
    assert address == info.user("bob").address
    assert code == 554 and "Access denied" in reply


async def test_send_many_100_messages_on_one_connection(mail_servers: MailServers) -> None:
    info = mail_servers.info
    tag = new_tag()
    messages = [simple_message(info, f"many {tag} {n}") for n in range(100)]
    async with smtp_session(info) as client:
        results = await client.send_many(messages)
        stats = client.statistics()
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert all(r.sent for r in results)
    assert (stats.connections, stats.reconnects, stats.messages_sent) == (1, 0, 100)
    async with imap_session(info) as imap:
        uids = await wait_for_uids(imap, f'HEADER Subject "many {tag}"', 100)
        assert len(uids) == 100
        await imap.delete_messages(uids)


async def test_send_many_reconnects_when_the_server_drops(mail_servers: MailServers) -> None:
    """A relay cuts every connection after ~20 kB; the batch still gets through."""
    info = mail_servers.info
    alice = info.user("alice")
    tag = new_tag()
    filler = "x" * 1500
    messages = [
        MailMessage(f"dropped {tag} {n}", alice.address, [info.user("bob").address],
                    text_content=filler)
        for n in range(30)
    ]
    proxy = FaultyProxy(info.host, info.smtp_port, cut_after=20_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncSMTPClient() as client:
            await client.connect(info.host, proxy.port, ssl_context=info.ssl_context())
            await client.login(alice.address, alice.password)
            results = await client.send_many(messages)
            stats = client.statistics()
        nursery.cancel_scope.cancel()
    assert all(r.sent for r in results)
    assert proxy.cuts >= 1
    assert stats.reconnects >= 1 and stats.connections == stats.reconnects + 1
    async with imap_session(info) as imap:
        uids = await wait_for_uids(imap, f'HEADER Subject "dropped {tag}"', len(messages))
        fetched = await imap.fetch(uids)
        # a message whose final reply was lost with the connection may come twice, none is lost
        assert {m.message_id for m in fetched} == {m.message_id for m in messages}
        await imap.delete_messages(uids)


async def test_deadline_on_a_silent_server_is_prompt(mail_servers: MailServers) -> None:
    silent = SilentServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(silent.serve)
        # no socket timeout at all: only the trio deadline can end the blocked greeting read
        async with AsyncSMTPClient(socket_timeout=None) as client:
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.3):
                    await client.connect("127.0.0.1", silent.port)
            assert not silent.released.is_set()  # the server never let go: we did
            assert not client.connected
        assert silent.accepted == 1
        assert busy_mail_threads() == []
        silent.release()
        nursery.cancel_scope.cancel()


async def test_deadline_mid_session_then_reconnect(mail_servers: MailServers) -> None:
    """A real session (TLS + AUTH) through a relay that freezes: the deadline ends the send
    promptly and closes the connection; the next send reconnects and logs in again."""
    info = mail_servers.info
    alice = info.user("alice")
    tag = new_tag()
    proxy = FaultyProxy(info.host, info.smtp_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncSMTPClient(socket_timeout=None) as client:
            await client.connect(info.host, proxy.port, ssl_context=info.ssl_context())
            await client.login(alice.address, alice.password)
            proxy.freeze()
            with trio.move_on_after(0.3) as deadline:
                await client.send_message(simple_message(info, f"frozen {tag}"))
            assert deadline.cancelled_caught
            assert not client.connected
            assert busy_mail_threads() == []
            proxy.thaw()
            result = await client.send_message(simple_message(info, f"thawed {tag}"))
            assert result.sent
            assert client.statistics().reconnects == 1
            assert client.username == alice.address
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_stalled_reply_after_greeting() -> None:
    stalling = SilentServer.greeting_then_silence(b"220 stall.test ESMTP\r\n")
    async with trio.open_nursery() as nursery:
        await nursery.start(stalling.serve)
        async with AsyncSMTPClient(socket_timeout=None, local_hostname="client.test") as client:
            with trio.move_on_after(0.3) as deadline:
                await client.connect("127.0.0.1", stalling.port, start_tls=False)
            assert deadline.cancelled_caught
        assert busy_mail_threads() == []
        stalling.release()
        nursery.cancel_scope.cancel()


async def test_socket_timeout_backstop() -> None:
    silent = SilentServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(silent.serve)
        async with AsyncSMTPClient(socket_timeout=0.2) as client:
            with pytest.raises(SMTPConnectionError, match="no greeting"):
                await client.connect("127.0.0.1", silent.port)
        silent.release()
        nursery.cancel_scope.cancel()


async def test_connection_refused_and_misuse() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncSMTPClient() as client:
        with pytest.raises(SMTPConnectionError, match="cannot connect") as refused:
            await client.connect("127.0.0.1", port)
        assert isinstance(refused.value, MailConnectionError)
        with pytest.raises(MailNotConnected):
            await client.send_message(MailMessage("s", "a@example.test", ["b@example.test"]))
        with pytest.raises(MailNotConnected):
            await client.login("a", "b")
        with pytest.raises(MailMessageError):
            await client.send_message("not a message")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            await client.connect("127.0.0.1", 0)
        with pytest.raises(ConfigurationError):
            await client.connect("127.0.0.1", 465, start_tls=True)
        with pytest.raises(ConfigurationError):
            await client.login("a\r\nRSET", "b")
    with pytest.raises(ConfigurationError):
        AsyncSMTPClient(socket_timeout=0)


async def test_the_seed_example(mail_servers: MailServers) -> None:
    """mtaio's AsyncSMTPClient example, pointed at the test server."""
    info = mail_servers.info
    alice = info.user("alice")
    pdf_content = b"%PDF-1.4\n" + os.urandom(2048)
    tag = new_tag()

    async with AsyncSMTPClient() as client:
        # Connect and login
        await client.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
        await client.login(alice.address, alice.password)
        # Create message
        message = MailMessage(
            subject=f"Test Message {tag}",
            sender=alice.address,
            recipients=[info.user("bob").address],
            text_content="Hello from mtaio",
            html_content="<h1>Hello from mtaio</h1>",
        )
        # Add attachment
        attachment = Attachment(
            filename="document.pdf",
            content=pdf_content,
            content_type="application/pdf",
        )
        message.attachments.append(attachment)
        # Send message
        await client.send_message(message)

    async with imap_session(info) as imap:
        uids = await wait_for_uids(imap, f'HEADER Subject "{tag}"')
        (received,) = await imap.fetch(uids)
    assert received.text_content == "Hello from mtaio\n"
    assert [(a.filename, a.content) for a in received.attachments] == [
        ("document.pdf", pdf_content)
    ]


async def test_smtputf8_for_non_ascii_addresses(mail_servers: MailServers) -> None:
    """Postfix takes the SMTPUTF8 transaction. (It cannot hand it on: Dovecot 2.3's LMTP does
    not offer SMTPUTF8, so Postfix bounces it there; parsing UTF-8 headers is tested offline.)"""
    info = mail_servers.info
    message = MailMessage(
        "utf8", "Jörg <jörg@example.test>", [info.user("bob").address], text_content="Grüße\n"
    )
    assert message.needs_smtputf8
    async with smtp_session(info) as client:
        assert "smtputf8" in client.extensions
        result = await client.send_message(message)
    assert result.sent and result.code == 250
