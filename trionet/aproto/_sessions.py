"""Sessions: one per connection, counted per peer IP address for ``session_limit``."""

from __future__ import annotations

from ._peer import Session

__all__ = ["Session", "SessionRegistry"]


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
