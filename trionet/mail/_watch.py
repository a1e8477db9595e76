"""A mailbox watcher that resumes where it stopped: it remembers the mailbox's UIDVALIDITY and
the last UID it delivered (a checkpoint, in a pluggable store), and after a restart delivers the
messages that arrived in between, once."""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from .._threads import run_blocking
from ..errors import ConfigurationError
from ._errors import IMAPConnectionError
from ._imap import AsyncIMAPClient
from ._message import MailMessage

__all__ = ["Checkpoint", "CheckpointStore", "FileCheckpointStore", "MailboxWatcher",
           "MemoryCheckpointStore"]

logger = logging.getLogger("trionet.mail")


@dataclass(frozen=True)
class Checkpoint:
    """Where a :class:`MailboxWatcher` stands in a mailbox.

    Attributes:
        uidvalidity: the mailbox's UIDVALIDITY when the UIDs below were valid.
        last_uid: the highest UID delivered (and processed) so far; 0 for none.
    """

    uidvalidity: int
    last_uid: int


class CheckpointStore(Protocol):
    """Keeps the :class:`Checkpoint` of each watcher (``key``: one per account and mailbox)."""

    async def load(self, key: str) -> Checkpoint | None:
        """The saved checkpoint, or None if there is none."""
        ...

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Save ``checkpoint`` (it replaces the previous one)."""
        ...


class MemoryCheckpointStore:
    """A :class:`CheckpointStore` in memory (for tests, or one process's restarts of a
    watcher)."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, Checkpoint] = {}

    async def load(self, key: str) -> Checkpoint | None:
        return self.checkpoints.get(key)

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        self.checkpoints[key] = checkpoint


class FileCheckpointStore:
    """A :class:`CheckpointStore` in one JSON file, replaced atomically at each save (so that it
    survives the process).

    Args:
        path: the file (made on the first save).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, list[int]]:
        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 20)  # bounded: a checkpoint file is tiny
        except FileNotFoundError:
            return {}
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"{self.path} is not a checkpoint file")
        return loaded

    def _write(self, key: str, checkpoint: Checkpoint) -> None:
        data = self._read()
        data[key] = [checkpoint.uidvalidity, checkpoint.last_uid]
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)

    async def load(self, key: str) -> Checkpoint | None:
        data = await run_blocking(self._read)
        value = data.get(key)
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) for v in value)):
            return None
        return Checkpoint(value[0], value[1])

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        await run_blocking(self._write, key, checkpoint)


class MailboxWatcher:
    """The new messages of a mailbox, in UID order, resuming from a checkpoint::

        store = FileCheckpointStore("inbox.checkpoint")
        async for message in MailboxWatcher(client, store):
            await handle(message)

    *client* is a logged-in :class:`AsyncIMAPClient`. The watcher selects the mailbox
    (read-only: flags are left alone), delivers the messages above its checkpoint, then waits
    with IDLE for more. When the loop asks for the next message, the previous one counts as
    processed and the checkpoint is saved (:meth:`commit` saves it at once, before a
    ``break``): a message is delivered again after a restart only if the program stopped while
    processing it (at least once), and messages that arrived while no watcher ran are
    delivered after the restart.

    The first run (no checkpoint) starts at the mailbox's UIDNEXT (``start="new"``, only
    messages that arrive from now on) or at its beginning (``start="all"``).

    UIDVALIDITY: if the mailbox's UIDVALIDITY differs from the checkpoint's (the mailbox was
    re-created, or the server renumbered it), the saved UID means nothing any more. With
    ``on_uidvalidity_change="all"`` (the default) every message now in the mailbox is
    delivered again (none is lost; some may repeat); with ``"new"`` the watcher starts at the
    new UIDNEXT (nothing repeats; messages that arrived in between are skipped). Either way a
    warning is logged. The same check runs after each reconnection (a connection lost while
    idling, searching or fetching is reopened once by the client; a second failure in a row
    is raised from the loop).

    Args:
        client: a logged-in client; the watcher selects ``mailbox`` on it and uses it alone.
        store: where the checkpoint lives.
        mailbox: the mailbox to watch.
        key: the checkpoint's key in the store (default: ``"<user>/<mailbox>"``).
        start: ``"new"`` or ``"all"``, for the first run.
        on_uidvalidity_change: ``"all"`` or ``"new"`` (see above).
        batch_size: messages fetched per ``UID FETCH``.
        renew_after: IDLE renewal, as for :meth:`AsyncIMAPClient.idle`.
    """

    def __init__(
        self,
        client: AsyncIMAPClient,
        store: CheckpointStore,
        *,
        mailbox: str = "INBOX",
        key: str | None = None,
        start: Literal["new", "all"] = "new",
        on_uidvalidity_change: Literal["all", "new"] = "all",
        batch_size: int = 50,
        renew_after: float = 540.0,
    ) -> None:
        if start not in ("new", "all") or on_uidvalidity_change not in ("new", "all"):
            raise ConfigurationError('start and on_uidvalidity_change take "new" or "all"')
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError("batch_size must be an int >= 1")
        self._client = client
        self._store = store
        self._mailbox = mailbox
        self._key = key
        self._start = start
        self._on_change = on_uidvalidity_change
        self._batch = batch_size
        self._renew_after = renew_after
        self._checkpoint: Checkpoint | None = None
        self._ready: collections.deque[MailMessage] = collections.deque()
        self._delivered: int | None = None  # the UID handed out last (saved on the next call)
        self.uidvalidity_changes = 0

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The current checkpoint (None before the first message was asked for)."""
        return self._checkpoint

    async def commit(self) -> None:
        """Count the message handed out last as processed and save the checkpoint now (the
        next iteration does it anyway): call it before leaving the loop with ``break`` or
        ``return``, or that message is delivered again after a restart."""
        if self._delivered is not None:
            await self._advance(self._delivered)
            self._delivered = None

    def __aiter__(self) -> MailboxWatcher:
        return self

    async def __anext__(self) -> MailMessage:
        if self._checkpoint is None:
            await self._open()
        await self.commit()
        while not self._ready:
            await self._fill()
        message = self._ready.popleft()
        self._delivered = message.uid
        return message

    async def _open(self) -> None:
        client = self._client
        status = await client.select_mailbox(self._mailbox, readonly=True)
        if self._key is None:
            self._key = f"{client.username or ''}/{self._mailbox}"
        saved = await self._store.load(self._key)
        uidvalidity, uidnext = status.uidvalidity or 0, status.uidnext or 1
        if saved is None:
            last = uidnext - 1 if self._start == "new" else 0
        elif saved.uidvalidity != uidvalidity:
            last = self._uidvalidity_changed(saved.uidvalidity, uidvalidity, uidnext)
        else:
            last = saved.last_uid
        self._checkpoint = Checkpoint(uidvalidity, last)
        await self._store.save(self._key, self._checkpoint)

    def _uidvalidity_changed(self, old: int, new: int, uidnext: int) -> int:
        self.uidvalidity_changes += 1
        self._ready.clear()
        logger.warning(
            "UIDVALIDITY of %s changed from %d to %d: the saved position is void; %s",
            self._mailbox, old, new,
            "delivering every message in it again" if self._on_change == "all"
            else "going on with new messages only",
        )
        return 0 if self._on_change == "all" else uidnext - 1

    async def _advance(self, uid: int | None) -> None:
        checkpoint = self._checkpoint
        assert checkpoint is not None
        assert self._key is not None
        if uid is not None and uid > checkpoint.last_uid:
            self._checkpoint = Checkpoint(checkpoint.uidvalidity, uid)
            await self._store.save(self._key, self._checkpoint)

    async def _fill(self) -> None:
        checkpoint = self._checkpoint
        assert checkpoint is not None
        last = checkpoint.last_uid
        try:
            # "UID n:*" also matches the highest UID when it is below n: keep only newer ones
            uids = [uid for uid in await self._client.search(f"UID {last + 1}:*") if uid > last]
            if uids:
                self._ready.extend(await self._client.fetch(uids[: self._batch]))
        except IMAPConnectionError as exc:
            # lost: the next command reconnects (once; a second failure is raised)
            logger.info("IMAP connection lost while watching %s (%s)", self._mailbox, exc)
            await self._recheck()
            return
        if uids:
            if not self._ready:  # expunged in between: skip them
                await self._advance(uids[min(len(uids), self._batch) - 1])
            return
        async for event in self._client.idle(renew_after=self._renew_after):
            if event.kind == "reconnected":
                await self._recheck()
                return
            if event.kind == "exists":
                return

    async def _recheck(self) -> None:
        """After a reconnection: is the mailbox still the one the UIDs belong to?"""
        checkpoint = self._checkpoint
        assert checkpoint is not None
        assert self._key is not None
        status = await self._client.select_mailbox(self._mailbox, readonly=True)
        uidvalidity = status.uidvalidity or 0
        if uidvalidity != checkpoint.uidvalidity:
            last = self._uidvalidity_changed(checkpoint.uidvalidity, uidvalidity,
                                             status.uidnext or 1)
            self._delivered = None
            self._checkpoint = Checkpoint(uidvalidity, last)
            await self._store.save(self._key, self._checkpoint)
