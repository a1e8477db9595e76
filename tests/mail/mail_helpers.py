"""Helpers for the mail tests: logged-in clients for the real servers, polling for delivery,
network faults in front of a real server, and a check that no mail call is left on a thread."""

from __future__ import annotations

import base64
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import trio

from trionet.mail import AsyncIMAPClient, AsyncSMTPClient, MailMessage
from trionet.testing import MailInfo

#: Upper bound for a delivery through Postfix and LMTP to show up in IMAP (normally ~50 ms).
DELIVERY_BOUND = 15.0


def new_tag() -> str:
    """A unique token to put into subjects (the servers are shared by the whole session)."""
    return uuid.uuid4().hex


@asynccontextmanager
async def smtp_session(info: MailInfo, user: str = "alice") -> AsyncIterator[AsyncSMTPClient]:
    """An AsyncSMTPClient connected with STARTTLS and logged in."""
    account = info.user(user)
    async with AsyncSMTPClient() as client:
        await client.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
        await client.login(account.address, account.password)
        yield client


@asynccontextmanager
async def imap_session(
    info: MailInfo, user: str = "bob", mailbox: str | None = "INBOX"
) -> AsyncIterator[AsyncIMAPClient]:
    """An AsyncIMAPClient connected over IMAPS, logged in, with ``mailbox`` selected."""
    account = info.user(user)
    async with AsyncIMAPClient() as client:
        await client.connect(
            info.host, info.imaps_port, use_tls=True, ssl_context=info.ssl_context()
        )
        await client.login(account.address, account.password)
        if mailbox is not None:
            await client.select_mailbox(mailbox)
        yield client


async def wait_for_uids(imap: AsyncIMAPClient, criteria: str, count: int = 1) -> list[int]:
    """Poll ``UID SEARCH`` until at least ``count`` messages match (bounded)."""
    with trio.fail_after(DELIVERY_BOUND):
        while True:
            uids = await imap.search(criteria)
            if len(uids) >= count:
                return uids
            await trio.sleep(0.05)


def simple_message(info: MailInfo, subject: str, *, to: str = "bob") -> MailMessage:
    return MailMessage(
        subject, info.user("alice").address, [info.user(to).address], text_content=subject
    )


def busy_mail_threads() -> list[str]:
    """Threads (other than this one) currently running smtplib, imaplib or trionet.mail code."""
    busy = []
    me = threading.get_ident()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        current: FrameType | None = frame
        while current is not None:
            filename = current.f_code.co_filename
            if filename.endswith(("smtplib.py", "imaplib.py")) or "trionet/mail/" in filename:
                busy.append(f"{names.get(ident, ident)}: {filename}:{current.f_lineno}")
                break
            current = current.f_back
    return busy


class LoopbackServer:
    """A test server on a free loopback port: ``await nursery.start(server.serve)``, then
    ``server.port``; each connection is handed to ``_handle``."""

    port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError


class SilentServer(LoopbackServer):
    """Accepts TCP connections and never sends a byte: a stalled server.

    Connections stay open until :meth:`release` (called by the test when it is done, or by the
    nursery's cancellation), so a client can only get away by its own deadline.
    """

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.released = trio.Event()
        self._greeting: bytes | None = None

    @classmethod
    def greeting_then_silence(cls, greeting: bytes) -> SilentServer:
        """A server that sends ``greeting``, then never answers."""
        server = cls()
        server._greeting = greeting
        return server

    def release(self) -> None:
        self.released.set()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            if self._greeting is not None:
                await stream.send_all(self._greeting)
            await self.released.wait()


class FaultyProxy(LoopbackServer):
    """A TCP relay in front of a real server that a test can freeze, or that cuts every
    connection once it has relayed ``cut_after`` bytes from the client (a network fault)."""

    def __init__(self, host: str, port: int, *, cut_after: int | None = None) -> None:
        self.target = (host, port)
        self.cut_after = cut_after
        self.port = 0
        self.connections = 0
        self.cuts = 0
        self._thawed = trio.Event()
        self._thawed.set()

    def freeze(self) -> None:
        """Hold every byte from now on (both directions) until :meth:`thaw`."""
        self._thawed = trio.Event()

    def thaw(self) -> None:
        self._thawed.set()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        async with (
            client,
            await trio.open_tcp_stream(*self.target) as upstream,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope, True)
            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope, False)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream,
                    scope: trio.CancelScope, counted: bool) -> None:
        relayed = 0
        try:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    return
                await self._thawed.wait()
                if counted and self.cut_after is not None:
                    room = self.cut_after - relayed
                    if len(data) >= room:
                        await sink.send_all(data[:room])
                        self.cuts += 1
                        return
                    relayed += len(data)
                await sink.send_all(data)
        except trio.BrokenResourceError:
            return
        finally:
            scope.cancel()  # one side done or cut: close both


class RecordingProxy(LoopbackServer):
    """A TCP relay in front of a real server that records every byte the client sends.

    With ``strip_starttls`` set, it also plays the man in the middle who removes STARTTLS from
    what the server announces (EHLO, CAPABILITY), so that the client believes the server does not
    offer it. :meth:`drop_connections` cuts the connections relayed so far.
    """

    def __init__(self, host: str, port: int, *, strip_starttls: bool = False) -> None:
        self.target = (host, port)
        self.strip_starttls = strip_starttls
        self.port = 0
        self.connections = 0
        self.sent = bytearray()  # everything the clients sent, all connections together
        self._scopes: list[trio.CancelScope] = []

    def drop_connections(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        async with (
            client,
            await trio.open_tcp_stream(*self.target) as upstream,
            trio.open_nursery() as nursery,
        ):
            self._scopes.append(nursery.cancel_scope)
            nursery.start_soon(self._upstream, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._downstream, upstream, client, nursery.cancel_scope)

    async def _upstream(self, client: trio.SocketStream, upstream: trio.SocketStream,
                        scope: trio.CancelScope) -> None:
        try:
            while data := await client.receive_some(65536):
                self.sent += data
                await upstream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            scope.cancel()

    async def _downstream(self, upstream: trio.SocketStream, client: trio.SocketStream,
                          scope: trio.CancelScope) -> None:
        pending = b""
        try:
            while data := await upstream.receive_some(65536):
                if not self.strip_starttls:
                    await client.send_all(data)
                    continue
                # whole lines only, so that a word split between reads is still found
                pending += data
                lines, _, pending = pending.rpartition(b"\n")
                if lines:
                    await client.send_all(lines.replace(b"STARTTLS", b"XNOTLS00") + b"\n")
        except trio.BrokenResourceError:
            pass
        finally:
            scope.cancel()


def secret_forms(username: str, secret: str) -> list[bytes]:
    """The ways a password or token can appear on the wire: as is (IMAP LOGIN), in base64
    alone (AUTH LOGIN), and inside a SASL PLAIN or XOAUTH2 response."""
    b64 = base64.b64encode
    return [
        secret.encode(),
        b64(secret.encode()),
        b64(b"\0" + username.encode() + b"\0" + secret.encode()),
        b64(f"user={username}\x01auth=Bearer {secret}\x01\x01".encode()),
    ]
