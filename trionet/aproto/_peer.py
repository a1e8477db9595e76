"""What packets, filters and sessions know of a connection, without importing the server.

:class:`Peer` is the public surface of :class:`~trionet.aproto.HandlerClient` as a protocol:
:class:`~trionet.aproto.Packet`, :class:`~trionet.aproto.Filter` and :class:`Session` are typed
against it, so none of them imports ``_server`` (which imports all of them).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Protocol

__all__ = ["ByteOrder", "Encoding", "IPAddress", "Peer", "Session"]

Encoding = Literal["json", "ziproto"]
ByteOrder = Literal["big", "little"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Peer(Protocol):
    """A connection as handlers see it: implemented by :class:`~trionet.aproto.HandlerClient`."""

    address: str
    port: int
    ip: IPAddress
    encoding: Encoding
    session: Session
    server: Any

    @property
    def closed(self) -> bool:
        """True once the connection is closing."""

    async def send(self, packet: Mapping[Any, Any], close: bool = False) -> None:
        """Send a packet (or a mapping) to the peer."""

    async def close(self) -> None:
        """Close the connection."""

    def get_sessions(self) -> list[Session]:
        """The open sessions from the peer's IP address."""


class Session:
    """A client session: one connection, from accept to close.

    Args:
        session_id: the session's UUID.
        client: the :class:`HandlerClient` of the connection.
        date: when the session started (UNIX time, seconds).

    Sessions compare and hash by ``session_id``; ``str(session)`` is the UUID.
    """

    __slots__ = ("client", "date", "session_id")

    def __init__(self, session_id: uuid.UUID, client: Peer, date: float) -> None:
        self.session_id = session_id
        self.client = client
        self.date = date

    async def close(self) -> None:
        """Close the session's connection (see :meth:`HandlerClient.close`)."""
        await self.client.close()

    def get_client(self) -> Peer:
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
