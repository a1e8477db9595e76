"""aiosmtplib / aioimaplib parity against the real Postfix and Dovecot: one-shot ``send()``,
OAuth 2.0 token providers (XOAUTH2 and OAUTHBEARER, Dovecot validating the tokens), the outbox
with retries, and the mailbox watcher that resumes from a UIDVALIDITY/UIDNEXT checkpoint."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme
from mail_helpers import (
    DELIVERY_BOUND,
    FaultyProxy,
    RecordingProxy,
    imap_session,
    new_tag,
    simple_message,
    wait_for_uids,
)

from trionet.errors import ConfigurationError
from trionet.mail import (
    AsyncIMAPClient,
    AsyncSMTPClient,
    Checkpoint,
    FileCheckpointStore,
    IMAPConnectionError,
    InsecureAuthError,
    MailboxWatcher,
    MemoryCheckpointStore,
    MemoryOutbox,
    OAuth2Token,
    OutboxEntry,
    OutboxSender,
    SMTPRecipientsRefused,
    send,
)
from trionet.mail._oauth import TokenCache
from trionet.supervision import Backoff, CircuitBreaker, RetryPolicy
from trionet.testing import MailServers, fresh_loopback_address
from trionet.tls import TLSOptions

BOUND = 30.0


@pytest.fixture(scope="module")
def oauth_servers(tls_ca: trustme.CA) -> Iterator[MailServers]:
    """Dovecot and Postfix that also accept OAuth 2.0 bearer tokens (JWTs Dovecot checks)."""
    with MailServers(ca=tls_ca, oauth2=True) as servers:
        yield servers


# -- send() --------------------------------------------------------------------------------------


async def test_one_shot_send_with_starttls_and_a_private_ca(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    tag = new_tag()
    with trio.fail_after(BOUND):
        result = await send(simple_message(info, tag), hostname=info.host, port=info.smtp_port,
                            username=alice.address, password=alice.password,
                            tls=TLSOptions(ca_file=info.ca_file))
        assert result.sent and result.accepted == [info.user("bob").address]
        async with imap_session(info) as imap:
            assert len(await wait_for_uids(imap, f'SUBJECT "{tag}"')) == 1


async def test_one_shot_send_is_secure_by_default(mail_servers: MailServers) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    message = simple_message(info, new_tag())
    with trio.fail_after(BOUND):
        # the system's CAs do not know the test CA: verified, so refused
        with pytest.raises(Exception, match="certificate"):
            await send(message, hostname=info.host, port=info.smtp_port,
                       username=alice.address, password=alice.password)
        # a server without TLS never sees the password
        with pytest.raises(InsecureAuthError):
            await send(message, hostname=info.host, port=info.smtp_plain_port,
                       username=alice.address, password=alice.password)
        # without a login Postfix refuses to relay: a permanent refusal
        with pytest.raises(SMTPRecipientsRefused):
            await send(message, hostname=info.host, port=info.smtp_port, tls=info.ssl_context())
    with pytest.raises(ConfigurationError):
        await send(message, hostname=info.host, username="x")  # no password


# -- OAuth 2.0 ------------------------------------------------------------------------------------


class Tokens:
    """A token provider for the OAuth servers' user that counts its calls."""

    def __init__(self, servers: MailServers, user: str, *, valid_for: float) -> None:
        self.info, self.user, self.valid_for = servers.info, user, valid_for
        self.fetched = 0

    async def __call__(self) -> OAuth2Token:
        await trio.lowlevel.checkpoint()
        self.fetched += 1
        return OAuth2Token(self.info.oauth2_token(self.user),
                           expires_at=time.time() + self.valid_for)


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_oauth2_tokens_for_imap_and_smtp(oauth_servers: MailServers, mechanism: str
                                               ) -> None:
    info = oauth_servers.info
    alice, bob = info.user("alice"), info.user("bob")
    tag = new_tag()
    provider = Tokens(oauth_servers, "alice", valid_for=300)

    with trio.fail_after(BOUND):
        async with AsyncSMTPClient() as smtp:
            await smtp.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
            await smtp.login_oauth2(alice.address, provider, mechanism=mechanism)
            await smtp.send_message(simple_message(info, tag))
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, info.imaps_port, use_tls=True,
                               ssl_context=info.ssl_context())
            await imap.login_oauth2(bob.address, info.oauth2_token(bob), mechanism=mechanism)
            await imap.select_mailbox("INBOX")
            assert len(await wait_for_uids(imap, f'SUBJECT "{tag}"')) == 1
    assert provider.fetched == 1


async def test_a_refused_token_is_refreshed_once(oauth_servers: MailServers) -> None:
    info = oauth_servers.info
    bob = info.user("bob")
    tokens = [info.oauth2_token(bob, lifetime=-120), info.oauth2_token(bob)]  # expired first

    async def provider() -> str:
        return tokens.pop(0)

    with trio.fail_after(BOUND):
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, info.imaps_port, use_tls=True,
                               ssl_context=info.ssl_context(),
                               source_address=(fresh_loopback_address(), 0))
            await imap.login_oauth2(bob.address, provider)
            assert imap.username == bob.address and tokens == []
            await imap.select_mailbox("INBOX")


async def test_the_token_cache_refreshes_near_expiry() -> None:
    fetched: list[float] = []

    async def provider() -> OAuth2Token:
        fetched.append(time.time())
        return OAuth2Token(f"t{len(fetched)}", expires_at=time.time() + 30)  # inside the margin

    cache = TokenCache(provider)
    assert await cache.token() == "t1"
    assert await cache.token() == "t2"  # too close to its expiry: fetched again
    lasting = TokenCache(lambda: _constant("forever"))
    assert await lasting.token() == await lasting.token() == "forever"
    assert lasting.fetches == 1


async def _constant(value: str) -> str:
    await trio.lowlevel.checkpoint()
    return value


# -- the outbox -----------------------------------------------------------------------------------


FAST = RetryPolicy(Backoff(initial=0.05, maximum=0.2))


async def test_the_outbox_keeps_and_retries_a_message_through_a_network_fault(
    mail_servers: MailServers,
) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    tag = new_tag()
    proxy = FaultyProxy(info.host, info.smtp_port, cut_after=0)  # every connection is cut
    outbox = MemoryOutbox()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            send_one = functools.partial(
                send, hostname=info.host, port=proxy.port, username=alice.address,
                password=alice.password, tls=info.ssl_context(), timeout=DELIVERY_BOUND,
            )
            async with OutboxSender(send_one, outbox, retry=FAST) as sender:
                assert await sender.send_message(simple_message(info, tag)) is None
                assert len(outbox) == 1 and sender.retries == 1
                (entry,) = await outbox.entries()
                assert entry.attempts == 1 and "SMTP" in entry.last_error
                proxy.cut_after = None  # the network is back
                await sender.flush()
            assert sender.sent == 1 and len(outbox) == 0
            nursery.cancel_scope.cancel()
        async with imap_session(info) as imap:
            assert len(await wait_for_uids(imap, f'SUBJECT "{tag}"')) == 1
    assert proxy.cuts >= 1


async def test_the_outbox_sends_what_an_earlier_run_left_and_drops_permanent_refusals(
    mail_servers: MailServers,
) -> None:
    info = mail_servers.info
    alice = info.user("alice")
    tag = new_tag()
    outbox = MemoryOutbox()
    unreachable = functools.partial(send, hostname=info.host, port=_closed_port(),
                                    tls=info.ssl_context())
    with trio.fail_after(BOUND):
        async with OutboxSender(unreachable, outbox, retry=FAST) as first_run:
            assert await first_run.send_message(simple_message(info, tag)) is None
        assert len(outbox) == 1  # the program stopped: the message waits in the outbox
        working = functools.partial(send, hostname=info.host, port=info.smtp_port,
                                    username=alice.address, password=alice.password,
                                    tls=info.ssl_context())
        async with OutboxSender(working, outbox, retry=FAST) as second_run:
            await second_run.flush()
            assert second_run.sent == 1
            anonymous = functools.partial(send, hostname=info.host, port=info.smtp_port,
                                          tls=info.ssl_context())
        async with OutboxSender(anonymous, outbox) as refused:
            with pytest.raises(SMTPRecipientsRefused):
                await refused.send_message(simple_message(info, new_tag()))
            assert len(outbox) == 0 and refused.given_up == 1
        async with imap_session(info) as imap:
            assert len(await wait_for_uids(imap, f'SUBJECT "{tag}"')) == 1


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the watcher ----------------------------------------------------------------------------------


async def _deliver(info: object, subjects: list[str]) -> None:
    from trionet.testing import MailInfo

    assert isinstance(info, MailInfo)
    alice = info.user("alice")
    async with AsyncSMTPClient() as smtp:
        await smtp.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
        await smtp.login(alice.address, alice.password)
        await smtp.send_many([simple_message(info, subject) for subject in subjects])


async def test_the_watcher_resumes_after_a_restart_and_delivers_each_message_once(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    info = mail_servers.info
    store = FileCheckpointStore(tmp_path / "inbox.checkpoint")
    key = f"watch-{new_tag()}"
    tag = new_tag()
    seen: list[str] = []

    async def watch(count: int) -> None:
        async with imap_session(info, mailbox=None) as imap:
            watcher = MailboxWatcher(imap, store, key=key)
            async for message in watcher:
                if tag in message.subject:
                    seen.append(message.subject)
                if len(seen) == count:
                    await watcher.commit()
                    return

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, 1)
            await wait_for_checkpoint(store, key)
            await _deliver(info, [f"{tag} 1"])
        # the watcher is down: two messages arrive
        await _deliver(info, [f"{tag} 2", f"{tag} 3"])
        async with imap_session(info) as imap:  # both are in the mailbox before it restarts
            await wait_for_uids(imap, f'SUBJECT "{tag}"', count=3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, 4)
            await _deliver(info, [f"{tag} 4"])
    # each message once, in the mailbox's UID order: Postfix may deliver 2 and 3 either way round
    assert seen[0] == f"{tag} 1" and seen[3] == f"{tag} 4"
    assert sorted(seen[1:3]) == [f"{tag} 2", f"{tag} 3"] and len(seen) == 4


async def wait_for_checkpoint(store: FileCheckpointStore, key: str) -> None:
    while await store.load(key) is None:  # noqa: ASYNC110 - a file: nothing signals it
        await trio.sleep(0.02)


async def test_a_changed_uidvalidity_redelivers_the_mailbox(mail_servers: MailServers) -> None:
    info = mail_servers.info
    tag = new_tag()
    store = MemoryCheckpointStore()
    with trio.fail_after(BOUND):
        async with imap_session(info) as imap:
            await imap.create_mailbox(f"watch-{tag}")
            try:
                status = await imap.select_mailbox(f"watch-{tag}")
                uid_next = status.uidnext or 1
                await imap.append(simple_message(info, f"{tag} kept"), mailbox=f"watch-{tag}")
                assert status.uidvalidity is not None
                # a checkpoint from an earlier incarnation of the mailbox, past its messages
                await store.save("k", Checkpoint(status.uidvalidity - 1, uid_next + 10))
                watcher = MailboxWatcher(imap, store, mailbox=f"watch-{tag}", key="k")
                first = await watcher.__anext__()
                assert first.subject == f"{tag} kept" and watcher.uidvalidity_changes == 1
                saved = await store.load("k")
                assert saved == Checkpoint(status.uidvalidity, 0)
            finally:
                await imap.select_mailbox("INBOX")
                await imap.delete_mailbox(f"watch-{tag}")


async def test_the_outbox_gives_up_after_the_policys_retries_and_obeys_its_breaker(
    mail_servers: MailServers,
) -> None:
    info = mail_servers.info
    unreachable = functools.partial(send, hostname=info.host, port=_closed_port(),
                                    tls=info.ssl_context())
    given_up: list[tuple[int, str]] = []

    async def give_up(entry: OutboxEntry, error: BaseException) -> None:
        given_up.append((entry.attempts, type(error).__name__))

    with trio.fail_after(BOUND):
        policy = RetryPolicy(Backoff(initial=0.01, maximum=0.02), max_attempts=2)
        async with OutboxSender(unreachable, retry=policy, on_give_up=give_up) as outbox:
            assert await outbox.send_message(simple_message(info, new_tag())) is None
            await outbox.flush()
        assert given_up == [(3, "SMTPConnectionError")]  # the first attempt and 2 retries

        breaker = CircuitBreaker(failure_threshold=1, recovery_time=3600.0)
        held = MemoryOutbox()
        policy = RetryPolicy(Backoff(initial=0.01), breaker=breaker)
        async with OutboxSender(unreachable, held, retry=policy) as outbox:
            assert await outbox.send_message(simple_message(info, new_tag())) is None
            assert breaker.state == "open"
            assert await outbox.send_message(simple_message(info, new_tag())) is None
            attempts = sorted(entry.attempts for entry in await held.entries())
        assert attempts == [0, 1]  # the second one was held back, not tried


async def test_the_clients_take_the_tls_vocabulary(mail_servers: MailServers) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    with trio.fail_after(BOUND):
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, info.imaps_port, use_tls=True,
                               tls=TLSOptions(ca_file=info.ca_file))
            await imap.login(bob.address, bob.password)
            assert imap.tls
        async with AsyncSMTPClient() as smtp:
            await smtp.connect(info.host, info.smtp_port, tls=False)  # no STARTTLS
            assert not smtp.tls
            with pytest.raises(InsecureAuthError):
                await smtp.login(bob.address, bob.password)
            with pytest.raises(ConfigurationError):
                await smtp.connect(info.host, info.smtp_port, tls=True,
                                   ssl_context=info.ssl_context())
            with pytest.raises(ConfigurationError):
                await smtp.connect(info.host, info.smtp_port, tls=False, start_tls=True)


async def test_a_relogin_after_a_reconnect_takes_a_new_token_near_expiry(
    oauth_servers: MailServers,
) -> None:
    info = oauth_servers.info
    bob = info.user("bob")
    proxy = RecordingProxy(info.host, info.imaps_port)
    # valid, but within the refresh margin: a later login asks for a new one
    provider = Tokens(oauth_servers, "bob", valid_for=30)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            async with AsyncIMAPClient() as imap:
                await imap.connect(info.host, proxy.port, use_tls=True,
                                   ssl_context=info.ssl_context())
                await imap.login_oauth2(bob.address, provider)
                await imap.select_mailbox("INBOX")
                proxy.drop_connections()
                with pytest.raises(IMAPConnectionError):
                    await imap.noop()
                await imap.search("ALL")  # reconnects and logs in again
                assert imap.statistics().reconnects == 1
            nursery.cancel_scope.cancel()
    assert provider.fetched == 2


async def test_the_watcher_carries_on_after_a_dropped_connection(
    mail_servers: MailServers,
) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    proxy = RecordingProxy(info.host, info.imaps_port)
    tag = new_tag()
    store = MemoryCheckpointStore()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            async with AsyncIMAPClient() as imap:
                await imap.connect(info.host, proxy.port, use_tls=True,
                                   ssl_context=info.ssl_context())
                await imap.login(bob.address, bob.password)
                await _deliver(info, [f"{tag} before"])
                async with imap_session(info) as other:
                    await wait_for_uids(other, f'SUBJECT "{tag}"')
                watcher = MailboxWatcher(imap, store, key=tag, start="new")
                nursery.start_soon(_drop_then_deliver, proxy, imap, watcher, info, tag)
                async for message in watcher:
                    if tag in message.subject:
                        break
                assert message.subject == f"{tag} after"
                assert imap.statistics().reconnects >= 1
            nursery.cancel_scope.cancel()


async def _drop_then_deliver(proxy: RecordingProxy, imap: AsyncIMAPClient,
                             watcher: MailboxWatcher, info: object, tag: str) -> None:
    # nothing signals these: the watcher has opened the mailbox (it may be searching or
    # idling when the connection drops), and the client has reconnected
    while watcher.checkpoint is None:  # noqa: ASYNC110
        await trio.sleep(0.02)
    proxy.drop_connections()
    while imap.statistics().reconnects < 1:  # noqa: ASYNC110
        await trio.sleep(0.02)
    await _deliver(info, [f"{tag} after"])
