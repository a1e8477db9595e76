"""Sessions: one per connection, counted per peer IP address for ``session_limit``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._server import HandlerClient

__all__ = ["Session", "SessionRegistry"]


class Session:
    """A client session: one connection, from accept to close.

    Args:
        session_id: the session's UUID.
        client: the :class:`HandlerClient` of the connection.
        date: when the session started (UNIX time, seconds).

    Sessions compare and hash by ``session_id``; ``str(session)`` is the UUID.
    """

    __slots__ = ("client", "date", "session_id")

    def __init__(self, session_id: uuid.UUID, client: HandlerClient, date: float) -> None:
        self.session_id = session_id
        self.client = client
        self.date = date

    async def close(self) -> None:
        """Close the session's connection (see :meth:`HandlerClient.close`)."""
        await self.client.close()

    def get_client(self) -> HandlerClient:
        """The session's :class:`HandlerClient`."""
        return self.client

    def __repr__(self) -> str:
        return f"Session({self.session_id})"

    def __str__(self) -> str:
        return str(self.session_id)

    def __hash__(self) -> int:
        return hash(self.session_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return self.session_id == other.session_id


class SessionRegistry:
    """The open sessions of one server, grouped by peer IP address (no I/O, no globals)."""

    __slots__ = ("_by_ip",)

    def __init__(self) -> None:
        self._by_ip: dict[str, list[Session]] = {}

    def count(self, address: str) -> int:
        """Open sessions from *address*."""
        sessions = self._by_ip.get(address)
        return len(sessions) if sessions else 0

    def add(self, address: str, session: Session) -> None:
        """Register *session* under *address*."""
        self._by_ip.setdefault(address, []).append(session)

    def remove(self, address: str, session: Session) -> None:
        """Forget *session* (no error if it is already gone)."""
        sessions = self._by_ip.get(address)
        if sessions is None:
            return
        try:
            sessions.remove(session)
        except ValueError:
            return
        if not sessions:
            del self._by_ip[address]

    def get(self, address: str) -> list[Session]:
        """A copy of the list of open sessions from *address*."""
        return list(self._by_ip.get(address, ()))

    def __len__(self) -> int:
        return sum(map(len, self._by_ip.values()))

    def addresses(self) -> list[str]:
        """The addresses that have open sessions."""
        return list(self._by_ip)
