"""Small internal helpers shared by the ASGI modules."""

from __future__ import annotations

from collections.abc import Awaitable

from .._util import collapse_single_error as collapse_single_error
from ._types import Message, Send

__all__ = ["SendTracker", "collapse_single_error", "single_leaf"]


def single_leaf(error: Exception) -> Exception:
    """The only exception inside (nested) one-exception groups, else ``error`` itself.

    A handler that runs a nursery and raises ``HTTPException`` in a child task produces an
    ``ExceptionGroup`` of one; the application should still answer with that status.
    """
    leaf: Exception = error
    while isinstance(leaf, ExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


class SendTracker:
    """Passes messages on to ``send`` and remembers whether any was sent.

    Whoever answers a failure with an error response (the application, a router, the timeout
    middleware) may do so only while nothing was sent: once the response has started, a second
    status line is impossible and the failure must abort the connection instead. Give the
    wrapped application :meth:`send` in place of ``send``, then look at :attr:`started`.

    Attributes:
        started: whether a message has gone through :meth:`send`.
    """

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    def send(self, message: Message) -> Awaitable[None]:
        """Send ``message`` on, marking the response as started.

        A plain method that returns ``send``'s awaitable: no coroutine of its own on this
        per-message path.
        """
        self.started = True
        return self._send(message)
