"""An outbox for outgoing mail: messages are stored first, sent, and retried with backoff after
a transient failure, so that a mail server that is down or refuses for a while loses nothing.

:class:`Outbox` is the storage interface (pluggable: a database table, a directory);
:class:`MemoryOutbox` keeps entries in memory; :class:`OutboxSender` sends and retries.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, Protocol, Self

import trio

from .._util import EnterOnce, open_hidden_nursery
from ..errors import CircuitOpenError, ConfigurationError, MailError
from ..supervision import Backoff, RetryPolicy
from ._errors import (
    MailMessageError,
    SMTPAuthenticationError,
    SMTPConnectionError,
    SMTPRecipientsRefused,
    SMTPResponseError,
)
from ._message import MailMessage
from ._types import SendResult

__all__ = ["MemoryOutbox", "Outbox", "OutboxEntry", "OutboxSender", "is_transient"]

logger = logging.getLogger("trionet.mail")

#: How often the sender looks at the outbox even when nothing is due (entries another process
#: added to a shared store).
_POLL: Final = 60.0


@dataclass(frozen=True)
class OutboxEntry:
    """One message waiting in an :class:`Outbox`.

    Attributes:
        id: the entry's key (unique in its outbox).
        message: the message.
        attempts: the sending attempts made so far.
        next_attempt: when to try next, in seconds since the epoch (``time.time()``).
        last_error: why the last attempt failed ("" before any).
    """

    id: str
    message: MailMessage
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""


class Outbox(Protocol):
    """Where :class:`OutboxSender` keeps messages until they are sent.

    Implement it over anything that outlives the process (a database table, files) to keep
    messages across restarts; every method may wait (for I/O).
    """

    async def put(self, entry: OutboxEntry) -> None:
        """Store ``entry``, replacing the entry with the same id."""
        ...

    async def remove(self, entry_id: str) -> None:
        """Forget the entry (sent, or failed for good); no error if there is none."""
        ...

    async def entries(self) -> list[OutboxEntry]:
        """Every stored entry, in any order."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in memory (entries are lost with the process).

    Args:
        max_entries: the most entries it holds; :meth:`put` of one more raises
            :exc:`MailError`.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("max_entries must be an int >= 1")
        self.max_entries = max_entries
        self._entries: dict[str, OutboxEntry] = {}

    async def put(self, entry: OutboxEntry) -> None:
        await trio.lowlevel.checkpoint()
        if entry.id not in self._entries and len(self._entries) >= self.max_entries:
            raise MailError(f"the outbox is full ({self.max_entries} messages)",
                            fault="local")
        self._entries[entry.id] = entry

    async def remove(self, entry_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._entries.pop(entry_id, None)

    async def entries(self) -> list[OutboxEntry]:
        await trio.lowlevel.checkpoint()
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


#: The outbox's default: 1 s doubling to 5 minutes (each within ±10 %), never giving up on a
#: transient failure.
DEFAULT_RETRY: Final = RetryPolicy(Backoff(initial=1.0, factor=2.0, maximum=300.0, jitter=0.1))


def is_transient(error: BaseException) -> bool:
    """Whether sending may succeed later: the server could not be reached or dropped the
    connection, a deadline passed, or it answered with a temporary (4xx) refusal."""
    if isinstance(error, SMTPConnectionError | trio.TooSlowError):
        return True
    if isinstance(error, SMTPRecipientsRefused):
        codes = [code for code, _ in error.result.refused.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(error, SMTPResponseError | SMTPAuthenticationError):
        return error.code is not None and 400 <= error.code < 500
    return False


Send = Callable[[MailMessage], Awaitable[SendResult]]
GiveUp = Callable[[OutboxEntry, BaseException], Awaitable[None]]


class OutboxSender(EnterOnce):
    """Sends messages through an :class:`Outbox`, retrying after transient failures.

    ::

        send_one = functools.partial(send, hostname="smtp.example.com", username=..., ...)
        async with OutboxSender(send_one, MemoryOutbox()) as outbox:
            await outbox.send_message(message)   # sent now, or kept and retried later

    A message is stored in the outbox before the first attempt and removed once the server
    accepted it, so a crash in between sends it again at the next start (at least once, never
    zero times). While the ``async with`` block runs, a task retries the stored messages as
    they fall due, also those an earlier run left in a persistent outbox.

    Args:
        send: the sending call, e.g. :func:`trionet.mail.send` with its connection arguments
            bound (``functools.partial``), or a connected client's
            :meth:`AsyncSMTPClient.send_message`.
        outbox: where messages wait (default: a new :class:`MemoryOutbox`).
        retry: a :class:`~trionet.supervision.RetryPolicy`: its ``backoff`` spaces the
            attempts of each message, its ``max_attempts`` is how many retries a message gets
            before it is given up (None: never), and its ``breaker`` (a shared
            :class:`~trionet.supervision.CircuitBreaker`), once open, holds every attempt
            back until it lets one through. Default: 1 s doubling to 5 minutes, never giving
            up on a transient failure. (The attempts of a message are counted in its
            :class:`OutboxEntry`, so they carry over to the next run; ``deadline`` and
            ``reset_after`` are not used.)
        on_give_up: awaited with the entry and the error when a stored message is given up
            (permanent refusal, or ``max_attempts``); default: log an error.
        is_transient: decides which errors are worth a retry (default: :func:`is_transient`).
    """

    def __init__(
        self,
        send: Send,
        outbox: Outbox | None = None,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        on_give_up: GiveUp | None = None,
        is_transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        if not callable(send):
            raise ConfigurationError("send must be an async callable taking a MailMessage")
        if not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a trionet.supervision.RetryPolicy")
        self._send = send
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self._retry = retry
        self._on_give_up = on_give_up
        self._is_transient = is_transient
        self._busy: set[str] = set()
        self._wake = trio.Event()
        self._changed = trio.Event()
        self.sent = 0
        self.retries = 0
        self.given_up = 0

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        async with open_hidden_nursery() as nursery:
            nursery.start_soon(self._retry_loop)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    async def send_message(self, message: MailMessage) -> SendResult | None:
        """Store ``message``, then try to send it now.

        Returns:
            The :class:`SendResult` if it was sent now; None if it failed transiently and
            stays in the outbox to be retried.

        Raises:
            MailMessageError: not a valid message (nothing stored).
            SMTPRecipientsRefused, SMTPResponseError, ...: a permanent refusal (the message
                is removed from the outbox).
        """
        if not isinstance(message, MailMessage):
            raise MailMessageError(f"send_message() takes a MailMessage, not "
                                   f"{type(message).__name__}")
        entry = OutboxEntry(message.message_id or f"<{uuid.uuid4().hex}@trionet>", message)
        await self.outbox.put(entry)
        return await self._attempt(entry, raise_permanent=True)

    async def flush(self) -> None:
        """Wait until the outbox is empty (every message sent or given up)."""
        while True:
            changed = self._changed
            if not await self.outbox.entries():
                return
            self._wake.set()
            await changed.wait()

    async def _attempt(self, entry: OutboxEntry, *, raise_permanent: bool) -> SendResult | None:
        self._busy.add(entry.id)
        breaker = self._retry.breaker
        try:
            try:
                if breaker is not None:
                    breaker.check()
                result = await self._send(entry.message)
            except CircuitOpenError as exc:
                # not an attempt: it waits, uncounted, until the breaker lets one through
                await self.outbox.put(replace(entry, next_attempt=time.time() + exc.retry_after,
                                              last_error=str(exc)))
                self._wake.set()
                return None
            except (MailError, trio.TooSlowError) as exc:
                if breaker is not None and self._is_transient(exc):
                    breaker.record_failure()
                await self._failed(entry, exc, raise_permanent)
                return None
            if breaker is not None:
                breaker.record_success()
            await self.outbox.remove(entry.id)
            self.sent += 1
            return result
        finally:
            self._busy.discard(entry.id)
            self._changed.set()
            self._changed = trio.Event()

    async def _failed(self, entry: OutboxEntry, exc: MailError | trio.TooSlowError,
                      raise_permanent: bool) -> None:
        attempts = entry.attempts + 1
        transient = self._is_transient(exc)
        limit = self._retry.max_attempts
        if transient and (limit is None or attempts <= limit):
            delay = max(0.0, self._retry.backoff.delay(attempts))
            await self.outbox.put(replace(entry, attempts=attempts,
                                          next_attempt=time.time() + delay,
                                          last_error=str(exc)))
            self.retries += 1
            logger.info("sending %s failed (%s); retry %d in %.1f s", entry.id, exc, attempts,
                        delay)
            self._wake.set()
            return None
        await self.outbox.remove(entry.id)
        self.given_up += 1
        if raise_permanent and not transient:
            raise exc
        if self._on_give_up is not None:
            await self._on_give_up(replace(entry, attempts=attempts, last_error=str(exc)), exc)
        else:
            logger.error("giving up sending %s after %d attempts: %s", entry.id, attempts, exc)
        return None

    async def _retry_loop(self) -> None:
        while True:
            wake = self._wake = trio.Event()
            now = time.time()
            pending = [e for e in await self.outbox.entries() if e.id not in self._busy]
            due = sorted((e for e in pending if e.next_attempt <= now),
                         key=lambda e: e.next_attempt)
            for entry in due:
                await self._attempt(entry, raise_permanent=False)
            if due:
                continue
            wait = min((e.next_attempt - now for e in pending), default=math.inf)
            with trio.move_on_after(min(wait, _POLL)):
                await wake.wait()
