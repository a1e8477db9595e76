"""Hardening of the mail clients (issue 15): no credentials over unencrypted connections unless
asked, a clear error for a server that expects implicit TLS, and bounded IMAP responses.

The servers are the real Postfix and Dovecot of the mail_servers fixture; a recording relay in
front of them captures what the client sends (and, as a man in the middle, can remove STARTTLS
from what the server announces). The response limits are checked against a scripted server."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
from mail_helpers import (
    LoopbackServer,
    RecordingProxy,
    busy_mail_threads,
    new_tag,
    secret_forms,
    simple_message,
)

from trionet.errors import ConfigurationError
from trionet.mail import (
    AsyncIMAPClient,
    AsyncSMTPClient,
    IMAPConnectionError,
    IMAPProtocolError,
    InsecureAuthError,
    MailAuthenticationError,
    MailError,
    SMTPConnectionError,
    SMTPProtocolError,
)
from trionet.testing import MailServers

#: Generous bound for anything that should end at once (a real bug hangs for 60 s or forever).
PROMPT = 20.0


def assert_no_secret(sent: bytes | bytearray, username: str, *secrets: str) -> None:
    for secret in secrets:
        for form in secret_forms(username, secret):
            assert form not in sent, f"{form!r} went out in clear"


def assert_refusal_explains(error: InsecureAuthError) -> None:
    text = str(error)
    assert "unencrypted" in text and "allow_insecure_auth=True" in text
    assert error.fault == "local" and error.reply == ""
    assert isinstance(error, MailAuthenticationError | MailError)


# -- credentials only over TLS ----------------------------------------------------------------


async def test_smtp_login_refused_on_a_server_without_tls(mail_servers: MailServers) -> None:
    """Postfix's plain port offers AUTH PLAIN LOGIN and no STARTTLS: by default the client
    refuses to log in, and neither the password nor a token reaches the wire."""
    info = mail_servers.info
    alice = info.user("alice")
    proxy = RecordingProxy(info.host, info.smtp_plain_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncSMTPClient() as client:
            await client.connect(info.host, proxy.port)
            assert not client.tls and "auth" in client.extensions
            for mechanism in (None, "PLAIN", "LOGIN"):
                with pytest.raises(InsecureAuthError) as refused:
                    await client.login(alice.address, alice.password, mechanism=mechanism)
                assert_refusal_explains(refused.value)
                assert "did not offer STARTTLS" in str(refused.value)
            with pytest.raises(InsecureAuthError):
                await client.login_oauth2(alice.address, "ya29.secret-token")
            assert client.username is None
            assert (await client.noop())[0] == 250  # the session itself is fine
        assert proxy.sent.lower().startswith(b"ehlo ")
        assert_no_secret(proxy.sent, alice.address, alice.password, "ya29.secret-token")
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_smtp_insecure_auth_when_asked(mail_servers: MailServers) -> None:
    """allow_insecure_auth=True: the login goes through in clear (the relay sees it) and mail
    is sent."""
    info = mail_servers.info
    alice = info.user("alice")
    proxy = RecordingProxy(info.host, info.smtp_plain_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncSMTPClient(allow_insecure_auth=True) as client:
            await client.connect(info.host, proxy.port)
            assert not client.tls
            await client.login(alice.address, alice.password)
            result = await client.send_message(simple_message(info, f"in clear {new_tag()}"))
            assert result.sent
        # the capture works: the PLAIN response did go out in clear this time
        assert secret_forms(alice.address, alice.password)[2] in proxy.sent
        nursery.cancel_scope.cancel()


async def test_imap_login_refused_when_starttls_is_stripped(mail_servers: MailServers) -> None:
    """A man in the middle removes STARTTLS from Dovecot's capabilities: the client stays in
    clear, and by default refuses LOGIN and AUTHENTICATE; nothing secret reaches the wire."""
    info = mail_servers.info
    bob = info.user("bob")
    proxy = RecordingProxy(info.host, info.imap_port, strip_starttls=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, proxy.port, ssl_context=info.ssl_context())
            assert not imap.tls and "STARTTLS" not in imap.capabilities
            with pytest.raises(InsecureAuthError) as refused:
                await imap.login(bob.address, bob.password)
            assert_refusal_explains(refused.value)
            assert "did not offer STARTTLS" in str(refused.value)
            with pytest.raises(InsecureAuthError):
                await imap.login("bøb@example.test", "pässword")  # would be AUTHENTICATE PLAIN
            with pytest.raises(InsecureAuthError):
                await imap.login_oauth2(bob.address, "ya29.secret-token")
            assert imap.username is None
            await imap.noop()  # the session itself is fine
        assert_no_secret(proxy.sent, bob.address, bob.password, "ya29.secret-token")
        assert_no_secret(proxy.sent, "bøb@example.test", "pässword")
        assert b"LOGIN" not in proxy.sent and b"AUTHENTICATE" not in proxy.sent
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_imap_login_refused_with_start_tls_false(mail_servers: MailServers) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    async with AsyncIMAPClient() as imap:
        await imap.connect(info.host, info.imap_port, start_tls=False)
        with pytest.raises(InsecureAuthError, match="start_tls=False") as refused:
            await imap.login(bob.address, bob.password)
        assert_refusal_explains(refused.value)


async def test_imap_insecure_auth_when_asked(mail_servers: MailServers) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    proxy = RecordingProxy(info.host, info.imap_port, strip_starttls=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncIMAPClient(allow_insecure_auth=True) as imap:
            await imap.connect(info.host, proxy.port)
            assert not imap.tls
            await imap.login(bob.address, bob.password)  # Dovecot trusts loopback clients
            status = await imap.select_mailbox("INBOX")
            assert status.uidvalidity is not None
        assert bob.password.encode() in proxy.sent  # the capture works
        nursery.cancel_scope.cancel()


async def test_imap_relogin_after_reconnect_is_refused_in_clear(
    mail_servers: MailServers,
) -> None:
    """Logged in over STARTTLS; the connection drops and the relay now strips STARTTLS: the
    automatic re-login is refused instead of sending the stored password in clear."""
    info = mail_servers.info
    bob = info.user("bob")
    proxy = RecordingProxy(info.host, info.imap_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, proxy.port, ssl_context=info.ssl_context())
            assert imap.tls
            await imap.login(bob.address, bob.password)
            await imap.select_mailbox("INBOX")
            proxy.strip_starttls = True
            proxy.drop_connections()
            with trio.fail_after(PROMPT):
                while imap.connected:  # until the client notices the loss
                    with pytest.raises(IMAPConnectionError):
                        await imap.noop()
                with pytest.raises(InsecureAuthError):
                    await imap.noop()  # reconnects in clear, refuses to log in again
            assert not imap.connected
            assert proxy.connections == 2
        # the first connection was encrypted, the second never saw the password
        assert_no_secret(proxy.sent, bob.address, bob.password)
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_allow_insecure_auth_must_be_a_bool() -> None:
    for make in (AsyncSMTPClient, AsyncIMAPClient):
        with pytest.raises(ConfigurationError):
            make(allow_insecure_auth="yes")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            make(greeting_timeout=0)


# -- a server that expects implicit TLS on an unusual port ----------------------------------------


Connect = Callable[[], Awaitable[None]]


@pytest.mark.parametrize("protocol", ["SMTP", "IMAP"])
async def test_implicit_tls_server_is_named_in_the_error(
    mail_servers: MailServers, protocol: str
) -> None:
    """Postfix's SMTPS and Dovecot's IMAPS listen on random ports (not 465 / 993); connecting
    without use_tls=True, the client gets no greeting. It must say so within its greeting
    timeout (here bounded by socket_timeout=2), and say how to fix it, not just time out."""
    info = mail_servers.info
    port = info.smtps_port if protocol == "SMTP" else info.imaps_port
    client = (AsyncSMTPClient if protocol == "SMTP" else AsyncIMAPClient)(socket_timeout=2.0)
    error = SMTPConnectionError if protocol == "SMTP" else IMAPConnectionError
    async with client:
        with trio.fail_after(PROMPT), pytest.raises(error) as failed:
            await client.connect(info.host, port, ssl_context=info.ssl_context())
        text = str(failed.value)
        assert f"no greeting from the {protocol} server" in text
        assert "within 2 s" in text
        assert "implicit TLS" in text and "use_tls=True" in text
        assert not client.connected
        # and with use_tls=True it works
        await client.connect(info.host, port, use_tls=True, ssl_context=info.ssl_context())
        assert client.tls
    assert busy_mail_threads() == []


@pytest.mark.parametrize("protocol", ["SMTP", "IMAP"])
async def test_greeting_timeout_is_configurable(mail_servers: MailServers, protocol: str
                                                ) -> None:
    info = mail_servers.info
    port = info.smtps_port if protocol == "SMTP" else info.imaps_port
    client = (AsyncSMTPClient if protocol == "SMTP" else AsyncIMAPClient)(greeting_timeout=0.5)
    async with client:
        with trio.fail_after(PROMPT), pytest.raises(MailError, match=r"within 0\.5 s.*use_tls"):
            await client.connect(info.host, port)


# -- bounded IMAP responses -----------------------------------------------------------------------


class ScriptedIMAPServer(LoopbackServer):
    """Greets, answers CAPABILITY, and answers NOOP with ``reply(stream)`` (a misbehaving
    server); then waits until the client goes away."""

    def __init__(self, reply: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
        self.reply = reply
        self.port = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            async with stream:
                await stream.send_all(b"* OK [CAPABILITY IMAP4rev1] scripted\r\n")
                while data := await stream.receive_some(4096):
                    buffer += data
                    while b"\r\n" in buffer:
                        line, buffer = buffer.split(b"\r\n", 1)
                        tag, command = line.split(b" ", 1)
                        if command.upper() == b"NOOP":
                            await self.reply(stream)
                        else:
                            await stream.send_all(tag + b" OK done\r\n")
        except trio.BrokenResourceError:
            pass


async def huge_literal(stream: trio.SocketStream) -> None:
    # announces 300 MB and sends none of it: a client that waits for it (or reads it) loses
    await stream.send_all(b"* 1 FETCH (UID 1 BODY[] {300000000}\r\n")
    await trio.sleep_forever()


async def endless_updates(stream: trio.SocketStream) -> None:
    chunk = b"* 1 EXISTS\r\n" * 5000
    while True:
        await stream.send_all(chunk)


async def endless_line(stream: trio.SocketStream) -> None:
    chunk = b"x" * 65536
    await stream.send_all(b"* OK ")
    while True:
        await stream.send_all(chunk)


async def many_literals(stream: trio.SocketStream) -> None:
    literal = b"y" * 100_000
    n = 0
    while True:
        n += 1
        await stream.send_all(b"* %d FETCH (BODY[] {%d}\r\n" % (n, len(literal)) + literal
                              + b")\r\n")


@pytest.mark.parametrize(
    ("reply", "limits", "complaint"),
    [
        (huge_literal, {}, "max_literal_size=67108864"),
        (endless_updates, {}, "max_response_lines=1000000"),
        (endless_line, {}, "max_line_length=1048576"),
        (endless_line, {"max_line_length": 1000}, "max_line_length=1000"),
        (huge_literal, {"max_literal_size": 1000}, "max_literal_size=1000"),
        (many_literals, {"max_response_size": 1_000_000}, "max_response_size=1000000"),
        (endless_updates, {"max_response_lines": 100}, "max_response_lines=100"),
    ],
    ids=["literal", "lines", "line", "line-1000", "literal-1000", "size", "lines-100"],
)
async def test_oversized_responses_are_refused(
    reply: Callable[[trio.SocketStream], Awaitable[None]], limits: dict[str, int], complaint: str
) -> None:
    """A server that announces a huge literal, or sends endless lines, or one endless line:
    the client stops at its limit with IMAPProtocolError (instead of waiting or reading forever)
    and closes the connection."""
    server = ScriptedIMAPServer(reply)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with AsyncIMAPClient(**limits) as imap:  # type: ignore[arg-type]
            await imap.connect("127.0.0.1", server.port)
            with trio.fail_after(PROMPT), pytest.raises(IMAPProtocolError) as refused:
                await imap.noop()
            assert complaint in str(refused.value)
            assert refused.value.fault == "remote"
            assert not imap.connected  # out of step with the server: closed
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


async def test_limits_must_be_positive_ints() -> None:
    for name in ("max_line_length", "max_literal_size", "max_response_size",
                 "max_response_lines"):
        for bad in (0, -1, 1.5, True, None):
            with pytest.raises(ConfigurationError, match=name):
                AsyncIMAPClient(**{name: bad})  # type: ignore[arg-type]


# -- bounded SMTP replies -------------------------------------------------------------------------


async def endless_ehlo_reply(stream: trio.SocketStream) -> None:
    """Greets, then answers EHLO with a multi-line reply that never ends."""
    try:
        async with stream:
            await stream.send_all(b"220 scripted ESMTP\r\n")
            await stream.receive_some(4096)  # EHLO
            chunk = b"250-PADDING-EXTENSION\r\n" * 2000
            while True:
                await stream.send_all(chunk)
    except trio.BrokenResourceError:
        pass


async def test_endless_smtp_reply_is_refused() -> None:
    """smtplib gathers a multi-line reply without limit; the client stops at MAX_REPLY_LINES
    with SMTPProtocolError instead of reading forever."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, endless_ehlo_reply, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with AsyncSMTPClient() as client:
            with trio.fail_after(PROMPT), pytest.raises(SMTPProtocolError, match="1000 lines"):
                await client.connect("127.0.0.1", port)
            assert not client.connected
        nursery.cancel_scope.cancel()
    assert busy_mail_threads() == []


@pytest.mark.parametrize("protocol", ["SMTP", "IMAP"])
async def test_use_tls_on_a_plain_port_says_so(mail_servers: MailServers, protocol: str) -> None:
    """use_tls=True pointed at the plain (STARTTLS) port: the server answers the handshake
    with its plain-text greeting, and the error must say so rather than WRONG_VERSION_NUMBER."""
    info = mail_servers.info
    port = info.smtp_port if protocol == "SMTP" else info.imap_port
    client = (AsyncSMTPClient if protocol == "SMTP" else AsyncIMAPClient)(socket_timeout=5.0)
    error = SMTPConnectionError if protocol == "SMTP" else IMAPConnectionError
    async with client:
        with trio.fail_after(PROMPT), pytest.raises(error, match="does not speak TLS on this port"):
            await client.connect(info.host, port, use_tls=True, ssl_context=info.ssl_context())
        assert not client.connected
    assert busy_mail_threads() == []
