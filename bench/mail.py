"""Mail: trionet's SMTP and IMAP clients vs plain smtplib / imaplib, against real Postfix and
Dovecot (started here with trionet.testing.MailServers; needs root, like the tests).

Rows (times in ms, lower is better; each contender connects, logs in and disconnects outside
the timed part, so a row measures only the work named):

* ``send N small``: N small messages on one connection. Peer: plain smtplib, an EmailMessage
  built and ``send_message()`` called per message. trionet: ``AsyncSMTPClient.send_many``
  (MailMessage objects built in the timed part too). Goal: trionet >= 0.9x the peer.
* ``fetch N``: read N small messages of a mailbox and parse them. Every contender parses each
  message the same way: compat32 ``message_from_bytes`` + a walk over the parts (the original's
  parsing; trionet's MailMessage parses with compat32 too). Peers: plain imaplib with one
  ``UID SEARCH ALL`` and one batched ``UID FETCH <all uids> (BODY.PEEK[])``, the fastest a
  user can write with the standard library (the baseline); imaplib with one ``FETCH (RFC822)``
  per message, as a plain loop and with a thread hop per FETCH as mtaio's ``asyncio.to_thread``
  did. trionet: ``fetch_messages("ALL", limit=None)``, one batched ``UID FETCH ...
  BODY.PEEK[]`` parsed into MailMessage objects. Goals: trionet >= 0.9x the batched imaplib
  (the strongest peer) and >= 5x the per-message imaplib loop; the table judges each goal, and
  the row's ``goal``/``met`` in the JSON line hold one entry per goal.

On loopback a round trip costs ~0.3 ms, so parsing dominates; mail servers are usually further
away. The ``@ 2 ms RTT`` rows run the same contenders through a relay that delays every chunk by
1 ms each way (a LAN; the internet is 10-100x that), which is where one round trip per message
shows. (Informational, no goal.)

The plain-library peers run in their own process (``bench/_mail_peers.py``, started once,
which makes importing trionet an error there); trionet's contenders run in this one.

``--quick``: 2 rounds of 50 messages. The machine is shared: read the ratios, not the times.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType

import trio
from _bounds import PeerProcess
from _harness import Contender, Goal, Row, main_args, run_rows

from trionet.mail import AsyncIMAPClient, AsyncSMTPClient, MailMessage
from trionet.testing import MailInfo, MailServers

BATCHED = "imaplib batched UID FETCH"
PER_MESSAGE = "imaplib per-message"
BATCHED_GOAL = 0.9
PER_MESSAGE_GOAL = 5.0


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class LatencyRelay:
    """A TCP relay to ``host:port`` that holds every chunk ``delay`` seconds in each direction
    (a longer wire, not a narrower one). Runs its own trio loop on a thread of this script.

    An end of stream is passed on only after every chunk before it (a half-close, as on a real
    wire): the server's last words (IMAP's ``BYE`` and ``OK`` to LOGOUT, then its close) reach
    the client whole. A connection ends when both directions have ended, or one side broke."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target = (host, port)
        self.delay = delay
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), name="relay")
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope = trio.CancelScope()

    def __enter__(self) -> LatencyRelay:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._token is not None
        self._token.run_sync_soon(self._scope.cancel)
        self._thread.join()

    async def _main(self) -> None:
        with self._scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream(*self.target) as upstream,
            trio.open_nursery() as nursery,
        ):
            for source, sink in ((client, upstream), (upstream, client)):
                send, receive = trio.open_memory_channel[tuple[float, bytes]](1000)
                nursery.start_soon(self._read, source, send)
                nursery.start_soon(self._write, receive, sink, nursery.cancel_scope)

    async def _read(self, source: trio.SocketStream,
                    send: trio.MemorySendChannel[tuple[float, bytes]]) -> None:
        async with send:  # closing it tells _write that the stream ended
            try:
                while data := await source.receive_some(65536):
                    await send.send((trio.current_time() + self.delay, data))
            except trio.BrokenResourceError:
                pass

    async def _write(self, receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
                     sink: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    await sink.send_all(data)
            await sink.send_eof()  # all relayed: now the end of the stream
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()  # that side is gone: so is the connection


def _with_relay(info: MailInfo, *, smtp: LatencyRelay, imap: LatencyRelay) -> MailInfo:
    return replace(info, smtp_port=smtp.port, imaps_port=imap.port)


# -- sending --------------------------------------------------------------------------------------


def trionet_send(info: MailInfo, count: int) -> float:
    alice, bob = info.user("alice"), info.user("bob")

    async def main() -> float:
        async with AsyncSMTPClient() as client:
            await client.connect(info.host, info.smtp_port, ssl_context=info.ssl_context())
            await client.login(alice.address, alice.password)
            start = time.perf_counter()
            messages = [
                MailMessage(f"bench trionet {n}", alice.address, [bob.address],
                            text_content=f"small message {n}\n")
                for n in range(count)
            ]
            results = await client.send_many(messages)
            elapsed = _ms(start)
        assert all(r.sent for r in results)
        return elapsed

    return trio.run(main)


# -- fetching -------------------------------------------------------------------------------------


def trionet_fetch(info: MailInfo, mailbox: str, count: int) -> float:
    alice = info.user("alice")

    async def main() -> float:
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, info.imaps_port, use_tls=True,
                               ssl_context=info.ssl_context())
            await imap.login(alice.address, alice.password)
            await imap.select_mailbox(mailbox)
            start = time.perf_counter()
            messages = await imap.fetch_messages("ALL", limit=None)
            elapsed = _ms(start)
        assert len(messages) == count and all(m.text_content for m in messages)
        return elapsed

    return trio.run(main)


def fill_mailbox(info: MailInfo, mailbox: str, count: int) -> None:
    alice, bob = info.user("alice"), info.user("bob")

    async def main() -> None:
        async with AsyncIMAPClient() as imap:
            await imap.connect(info.host, info.imaps_port, use_tls=True,
                               ssl_context=info.ssl_context())
            await imap.login(alice.address, alice.password)
            await imap.create_mailbox(mailbox)
            for n in range(count):
                await imap.append(
                    MailMessage(f"stored {n}", bob.address, [alice.address],
                                text_content=f"message {n}\n" * 10),
                    mailbox,
                )

    trio.run(main)


class Peers:
    """The plain-library peers in their own process (``bench/_mail_peers.py``, which imports no
    trionet), one job at a time; started once, so every run is as warm as trionet's."""

    def __init__(self, targets: dict[str, MailInfo]) -> None:
        self._worker = PeerProcess("_mail_peers.py", name="mail peers")
        self._ask = self._worker.ask
        self.close = self._worker.close
        info = next(iter(targets.values()))
        alice, bob = info.user("alice"), info.user("bob")
        self._ask({"op": "setup", "ca_file": str(info.ca_file),
                   "alice": {"address": alice.address, "password": alice.password},
                   "bob": {"address": bob.address},
                   "targets": {name: {"host": t.host, "smtp_port": t.smtp_port,
                                      "imaps_port": t.imaps_port}
                               for name, t in targets.items()}})

    def run(self, op: str, target: str, count: int) -> Callable[[], float]:
        """A contender: one *op* job against *target*; its time in ms."""
        return lambda: float(self._ask({"op": op, "target": target, "mailbox": "bench",
                                        "count": count})["ms"])

def main() -> None:
    args = main_args(__doc__ or "mail benchmark")
    count = 50 if args.quick else 200
    with (
        MailServers() as servers,
        LatencyRelay(servers.info.host, servers.info.smtp_port, 0.001) as smtp_relay,
        LatencyRelay(servers.info.host, servers.info.imaps_port, 0.001) as imap_relay,
        contextlib.ExitStack() as stack,
    ):
        info = servers.info
        far = _with_relay(info, smtp=smtp_relay, imap=imap_relay)
        fill_mailbox(info, "bench", count)

        peers = Peers({"near": info, "far": far})
        stack.callback(peers.close)

        def fetchers(target: MailInfo, where: str) -> list[Contender]:
            # The first is the baseline the harness judges trionet (the last) against.
            return [
                Contender(BATCHED, peers.run("imaplib_batched_fetch", where, count)),
                Contender("original: per-message + thread hop",
                          peers.run("threaded_fetch", where, count)),
                Contender(PER_MESSAGE, peers.run("imaplib_fetch", where, count)),
                Contender("trionet", lambda: trionet_fetch(target, "bench", count)),
            ]

        rows = [
            Row(
                f"send {count} small",
                [
                    Contender("smtplib", peers.run("smtplib_send", "near", count)),
                    Contender("trionet", lambda: trionet_send(info, count)),
                ],
                goal=0.9,
                unit="ms",
            ),
            Row(f"fetch {count}", fetchers(info, "near"), goal=BATCHED_GOAL, unit="ms",
                goals=[Goal(PER_MESSAGE_GOAL, baseline=PER_MESSAGE)]),
            Row(
                f"send {count} small @ 2 ms RTT",
                [
                    Contender("smtplib", peers.run("smtplib_send", "far", count)),
                    Contender("trionet", lambda: trionet_send(far, count)),
                ],
                unit="ms",
            ),
            Row(f"fetch {count} @ 2 ms RTT", fetchers(far, "far"), unit="ms"),
        ]
        run_rows(
            "mail",
            rows,
            rounds=args.rounds,
            note="Postfix + Dovecot on loopback, STARTTLS/IMAPS; times in ms (lower is "
            "better), ratio = baseline time / contender time.",
        )


if __name__ == "__main__":
    main()
