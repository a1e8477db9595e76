"""AsyncAProto-specific exceptions (all derive from the :mod:`trionet.errors` tree or Exception)."""

from __future__ import annotations

from ..errors import AProtoError, ConnectionFailure

__all__ = ["ConnectionClosed", "StopPropagation"]


class StopPropagation(Exception):
    """Raised by :meth:`Packet.stop_propagation` to stop dispatch to later handler groups.

    The server catches it: handlers in later groups are skipped, and the connection stays open
    (the original closed it).
    """


class ConnectionClosed(AProtoError, ConnectionFailure, EOFError):
    """The peer closed the connection cleanly while a packet was expected.

    ``error_code`` is ``"ERR_CONNECTION_CLOSED"``, a local name that never goes on the wire.
    """

    def __init__(self, message: str = "the server closed the connection") -> None:
        super().__init__(message, error_code="ERR_CONNECTION_CLOSED", fault="remote")
