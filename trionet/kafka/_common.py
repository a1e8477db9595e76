"""Small helpers shared by the producer, consumer and admin client."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

from .._threads import TrioPortal
from .._util import open_hidden_nursery
from ..errors import ConfigurationError

T = TypeVar("T")

#: The bootstrap timeout trionet gives kafka-python unless told otherwise (kafka-python: 30 s).
DEFAULT_BOOTSTRAP_TIMEOUT_MS: Final = 10_000


def servers_text(servers: str | Sequence[str]) -> str:
    """``"host:port,host:port"`` for messages, whatever form the servers were given in."""
    if isinstance(servers, str):
        return servers
    return ",".join(servers)


def check_servers(servers: object) -> str | list[str]:
    """Validate ``bootstrap_servers``: a non-empty string or sequence of strings.

    Raises:
        ConfigurationError: otherwise.
    """
    if isinstance(servers, str):
        if servers.strip():
            return servers
    elif isinstance(servers, Sequence) and servers and all(
        isinstance(item, str) and item.strip() for item in servers
    ):
        return list(servers)
    raise ConfigurationError(
        f"bootstrap_servers must be 'host:port' or a list of them, not {servers!r}"
    )


def with_defaults(config: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """*config* plus the *defaults* it does not set."""
    merged = dict(defaults)
    merged.update(config)
    return merged


# The hidden nursery every Kafka client's ``async with`` owns: a lone error comes out as itself.
hidden_nursery = open_hidden_nursery


class Completions(Generic[T]):
    """Items pushed from foreign threads, handed to trio in bursts.

    :meth:`push` (any thread) appends an item and, unless a hand-off is already scheduled,
    schedules one with :class:`~trionet._threads.TrioPortal` (``TrioToken.run_sync_soon``).
    The trio thread then calls *handle* for every item queued by then. Under load many items
    share one hand-off: there is no thread hop per item.
    """

    __slots__ = ("_handle", "_items", "_lock", "_portal", "_scheduled")

    def __init__(self, portal: TrioPortal, handle: Callable[[T], object]) -> None:
        self._portal = portal
        self._handle = handle
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def push(self, item: T) -> None:
        """Queue *item* for the trio thread. Thread-safe; never blocks for long."""
        self._items.append(item)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._portal.call_soon(self._run)

    def drain(self) -> None:
        """Handle every queued item now (trio thread), e.g. after the pushing thread stopped."""
        self._run()

    def _run(self) -> None:
        # Reset the flag before draining: an item pushed after this point schedules a new run,
        # one pushed before it is drained below. Nothing is left behind either way.
        with self._lock:
            self._scheduled = False
        items = self._items
        handle = self._handle
        while items:
            handle(items.popleft())
