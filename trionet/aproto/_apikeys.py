"""API keys: issued from :mod:`secrets`, stored hashed, checked in constant time.

How a key is stored
-------------------
The factory never keeps a key itself. It keeps the SHA-256 digest of the key, split in two
halves: the *selector* (first half, hex) indexes the record, the *verifier* (second half, hex)
is stored beside the metadata. Checking a key hashes it, looks the record up by selector and
compares the verifier with :func:`hmac.compare_digest`. So the time a check takes does not
depend on how much of a guessed key is right, and a leaked store does not leak usable keys. Keys
are random (about 5.95 bits per character, 190 bits at the default 32 characters), so a fast
hash is the right one: there is nothing to brute-force.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import string
from os import PathLike
from typing import Any, Final

import trio

from .._threads import ThreadLock, run_blocking
from ..errors import ConfigurationError

__all__ = [
    "APIKeyFactory",
    "APIKeyStorage",
    "AsyncAPIKeyFactory",
    "AsyncAPIKeyStorage",
    "MemoryKeyStorage",
    "SQLiteKeyStorage",
    "ThreadedKeyStorage",
]

_log = logging.getLogger("trionet.aproto")

#: The characters keys are drawn from (as in the original: letters and digits).
KEY_ALPHABET: Final = string.ascii_letters + string.digits
#: Keys shorter than this are refused: 16 characters are about 95 bits.
MIN_KEY_SIZE: Final = 16
#: The longest value :meth:`APIKeyFactory.check` hashes; longer values are refused at once.
MAX_KEY_SIZE: Final = 1024


class APIKeyStorage(abc.ABC):
    """Where an :class:`APIKeyFactory` keeps its records; subclass it to store keys elsewhere.

    A record is ``(verifier, metadata)`` under a ``selector`` (both hex strings derived from
    the key's digest; see the module docs). Methods are synchronous and are called on the
    server's trio thread, so they must be fast (a local database is fine; for a remote one,
    check keys inside your handler through :func:`~trionet.aproto.run_sync_task`).
    """

    @abc.abstractmethod
    def load(self, selector: str) -> tuple[str, Any] | None:
        """Return ``(verifier, metadata)`` for *selector*, or None."""

    @abc.abstractmethod
    def save(self, selector: str, verifier: str, metadata: Any) -> None:
        """Create or replace the record for *selector*."""

    @abc.abstractmethod
    def delete(self, selector: str) -> bool:
        """Delete the record for *selector*; return False if there was none."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of records."""


class MemoryKeyStorage(APIKeyStorage):
    """Records in a dict (the default; lost when the process exits)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[str, Any]] = {}

    def load(self, selector: str) -> tuple[str, Any] | None:
        return self._records.get(selector)

    def save(self, selector: str, verifier: str, metadata: Any) -> None:
        self._records[selector] = (verifier, metadata)

    def delete(self, selector: str) -> bool:
        return self._records.pop(selector, None) is not None

    def __len__(self) -> int:
        return len(self._records)


class SQLiteKeyStorage(APIKeyStorage):
    """Records in an SQLite database file (metadata stored as JSON).

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        table: the table name (letters, digits and underscores).

    The connection is opened with ``check_same_thread=False`` and guarded by a lock, so the
    storage may be shared with worker threads. Close it with :meth:`close` (or ``with``).
    """

    def __init__(self, path: str | PathLike[str], *, table: str = "aproto_api_keys") -> None:
        if not table.isidentifier():
            raise ConfigurationError(f"invalid SQLite table name {table!r}")
        self._table = table
        self._lock = ThreadLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            "(selector TEXT PRIMARY KEY, verifier TEXT NOT NULL, metadata TEXT NOT NULL)"
        )

    def load(self, selector: str) -> tuple[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT verifier, metadata FROM {self._table} WHERE selector = ?", (selector,)
            ).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1])

    def save(self, selector: str, verifier: str, metadata: Any) -> None:
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"API key metadata must be JSON-serializable: {exc}") from exc
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {self._table} (selector, verifier, metadata) "
                "VALUES (?, ?, ?)",
                (selector, verifier, text),
            )

    def delete(self, selector: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                f"DELETE FROM {self._table} WHERE selector = ?", (selector,)
            )
        return cursor.rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteKeyStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _checked_size(size: object) -> int:
    if (isinstance(size, bool) or not isinstance(size, int)
            or not MIN_KEY_SIZE <= size <= MAX_KEY_SIZE):
        raise ConfigurationError(
            f"APIKeyFactory size must be an int from {MIN_KEY_SIZE} to {MAX_KEY_SIZE}, "
            f"not {size!r}"
        )
    return size


def _new_key(size: int) -> str:
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(size))


def _split_digest(key: str) -> tuple[str, str]:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return digest[:32], digest[32:]


def _valid_shape(key: object) -> bool:
    """True if *key* could be a key at all: a str of at most MAX_KEY_SIZE characters that
    encodes to UTF-8 (JSON and msgpack payloads may carry lone surrogates, which do not)."""
    if not isinstance(key, str) or len(key) > MAX_KEY_SIZE:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class APIKeyFactory:
    """Issue, check, revoke and reissue API keys.

    Args:
        size: characters per key (letters and digits), 16 to 1024; default 32.
        storage: where records live; default a new :class:`MemoryKeyStorage`.

    ``key in factory`` and :meth:`check` tell whether a key is valid; the
    :class:`Filters.APIFactory <trionet.aproto.Filters>` filter uses them.

    Raises:
        ConfigurationError: *size* is not an int from 16 to 1024.
    """

    def __init__(self, size: int = 32, storage: APIKeyStorage | None = None) -> None:
        self.size = _checked_size(size)
        self.storage: APIKeyStorage = MemoryKeyStorage() if storage is None else storage

    def _new_key(self) -> str:
        return _new_key(self.size)

    def _record(self, key: object) -> tuple[str, Any] | None:
        if not _valid_shape(key):
            return None
        assert isinstance(key, str)
        selector, verifier = _split_digest(key)
        record = self.storage.load(selector)
        if record is None or not hmac.compare_digest(record[0], verifier):
            return None
        return record

    def _require(self, key: str) -> tuple[str, str, Any]:
        record = self._record(key)
        if record is None:
            raise KeyError("unknown or revoked API key")
        selector, _ = _split_digest(key)
        return selector, record[0], record[1]

    def issue(self, metadata: Any = None) -> str:
        """Create a key, store it with *metadata*, and return it.

        The key itself is not stored (only its digest), so keep the returned value.
        """
        while True:
            key = self._new_key()
            selector, verifier = _split_digest(key)
            if self.storage.load(selector) is None:  # a collision is ~impossible; stay exact
                self.storage.save(selector, verifier, metadata)
                return key

    def get(self, key: str) -> Any:
        """Return the metadata stored with *key*.

        Raises:
            KeyError: the key is unknown or revoked.
        """
        return self._require(key)[2]

    def check(self, key: object) -> bool:
        """True if *key* is a valid (issued, not revoked) key.

        Any other value is refused without an error: a non-string, a string longer than
        ``MAX_KEY_SIZE`` (1024) characters (refused before hashing), or a string that UTF-8
        cannot encode (a lone surrogate such as ``"\\ud800"``, which JSON allows).
        """
        return self._record(key) is not None

    def __contains__(self, key: object) -> bool:
        return self.check(key)

    def revoke(self, key: str) -> None:
        """Invalidate *key* and forget its metadata.

        Raises:
            KeyError: the key is unknown or already revoked.
        """
        selector, _, _ = self._require(key)
        self.storage.delete(selector)

    def reissue(self, key: str) -> str:
        """Replace *key* with a new key carrying the same metadata; the old key stops working.

        Raises:
            KeyError: the key is unknown or revoked.
        """
        selector, _, metadata = self._require(key)
        new_key = self.issue(metadata)
        self.storage.delete(selector)
        return new_key

    def update(self, key: str, metadata: Any) -> None:
        """Replace the metadata stored with *key*.

        Raises:
            KeyError: the key is unknown or revoked.
        """
        selector, verifier, _ = self._require(key)
        self.storage.save(selector, verifier, metadata)

    def __len__(self) -> int:
        return len(self.storage)

    def __repr__(self) -> str:
        return f"APIKeyFactory(size={self.size}, {len(self.storage)} key(s))"


class AsyncAPIKeyStorage(abc.ABC):
    """An asynchronous home for API key records (a database reached over the network, say).

    The same records as :class:`APIKeyStorage` (``(verifier, metadata)`` under a selector),
    with ``async`` methods. The server awaits :meth:`load` on the connection's task while it
    checks a packet's key, bounded by the factory's ``check_timeout``.
    """

    @abc.abstractmethod
    async def load(self, selector: str) -> tuple[str, Any] | None:
        """Return ``(verifier, metadata)`` for *selector*, or None."""

    @abc.abstractmethod
    async def save(self, selector: str, verifier: str, metadata: Any) -> None:
        """Create or replace the record for *selector*."""

    @abc.abstractmethod
    async def delete(self, selector: str) -> bool:
        """Delete the record for *selector*; return False if there was none."""

    @abc.abstractmethod
    async def count(self) -> int:
        """Number of records."""


class ThreadedKeyStorage(AsyncAPIKeyStorage):
    """A synchronous :class:`APIKeyStorage` (such as :class:`SQLiteKeyStorage` on a slow disk)
    used asynchronously: each call runs on a worker thread, so the server never blocks."""

    def __init__(self, storage: APIKeyStorage) -> None:
        self.storage = storage

    async def load(self, selector: str) -> tuple[str, Any] | None:
        return await run_blocking(self.storage.load, selector)

    async def save(self, selector: str, verifier: str, metadata: Any) -> None:
        await run_blocking(self.storage.save, selector, verifier, metadata)

    async def delete(self, selector: str) -> bool:
        return await run_blocking(self.storage.delete, selector)

    async def count(self) -> int:
        return await run_blocking(len, self.storage)


class AsyncAPIKeyFactory:
    """:class:`APIKeyFactory` over an :class:`AsyncAPIKeyStorage`: the same keys, digests and
    constant-time checks, with ``async`` methods.

    ``Filters.APIFactory(async_factory, field_name)`` awaits :meth:`check`.

    Args:
        storage: where records live.
        size: characters per key (letters and digits), 16 to 1024; default 32.
        check_timeout: the longest :meth:`check` waits for the storage, in seconds (default
            5); past it the key is refused (fail closed) and a warning logged. ``None``: no
            limit.

    Raises:
        ConfigurationError: *size* is not an int from 16 to 1024, or *check_timeout* is not
            positive.
    """

    def __init__(self, storage: AsyncAPIKeyStorage, size: int = 32, *,
                 check_timeout: float | None = 5.0) -> None:
        if not isinstance(storage, AsyncAPIKeyStorage):
            raise ConfigurationError(
                "AsyncAPIKeyFactory needs an AsyncAPIKeyStorage (wrap a synchronous one in "
                "ThreadedKeyStorage)"
            )
        if check_timeout is not None and not check_timeout > 0:
            raise ConfigurationError("check_timeout must be positive or None")
        self.size = _checked_size(size)
        self.storage = storage
        self.check_timeout = check_timeout

    async def _record(self, key: object) -> tuple[str, Any] | None:
        if not _valid_shape(key):
            return None
        assert isinstance(key, str)
        selector, verifier = _split_digest(key)
        record = await self.storage.load(selector)
        if record is None or not hmac.compare_digest(record[0], verifier):
            return None
        return record

    async def _require(self, key: str) -> tuple[str, str, Any]:
        record = await self._record(key)
        if record is None:
            raise KeyError("unknown or revoked API key")
        selector, _ = _split_digest(key)
        return selector, record[0], record[1]

    async def issue(self, metadata: Any = None) -> str:
        """Create a key, store it with *metadata*, and return it (only its digest is kept)."""
        while True:
            key = _new_key(self.size)
            selector, verifier = _split_digest(key)
            if await self.storage.load(selector) is None:
                await self.storage.save(selector, verifier, metadata)
                return key

    async def get(self, key: str) -> Any:
        """Return the metadata stored with *key*.

        Raises:
            KeyError: the key is unknown or revoked.
        """
        return (await self._require(key))[2]

    async def check(self, key: object) -> bool:
        """True if *key* is a valid key; any value that cannot be a key is refused, and so is
        every key while the storage does not answer within ``check_timeout``."""
        if self.check_timeout is None:
            return await self._record(key) is not None
        with trio.move_on_after(self.check_timeout) as scope:
            return await self._record(key) is not None
        if scope.cancelled_caught:
            _log.warning("API key storage did not answer within %g s; key refused",
                         self.check_timeout)
        return False

    async def revoke(self, key: str) -> None:
        """Invalidate *key* and forget its metadata.

        Raises:
            KeyError: the key is unknown or already revoked.
        """
        selector, _, _ = await self._require(key)
        await self.storage.delete(selector)

    async def reissue(self, key: str) -> str:
        """Replace *key* with a new key carrying the same metadata.

        Raises:
            KeyError: the key is unknown or revoked.
        """
        selector, _, metadata = await self._require(key)
        new_key = await self.issue(metadata)
        await self.storage.delete(selector)
        return new_key

    async def update(self, key: str, metadata: Any) -> None:
        """Replace the metadata stored with *key*.

        Raises:
            KeyError: the key is unknown or revoked.
        """
        selector, verifier, _ = await self._require(key)
        await self.storage.save(selector, verifier, metadata)

    async def count(self) -> int:
        """Number of keys."""
        return await self.storage.count()

    def __repr__(self) -> str:
        return f"AsyncAPIKeyFactory(size={self.size}, storage={type(self.storage).__name__})"
