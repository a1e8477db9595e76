"""ASGI 3 type aliases shared by every module of :mod:`trionet.asgi`, and the small protocols
through which the request side names the router without importing it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "RouteNamer", "Scope", "Send"]

#: An ASGI connection scope (``http``, ``websocket`` or ``lifespan``).
Scope: TypeAlias = MutableMapping[str, Any]
#: One ASGI event dictionary, sent or received.
Message: TypeAlias = MutableMapping[str, Any]
#: The awaitable an application calls to receive the next event.
Receive: TypeAlias = Callable[[], Awaitable[Message]]
#: The awaitable an application calls to send an event.
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application: ``await app(scope, receive, send)``.
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class RouteNamer(Protocol):
    """What a request needs of the router that serves it (``Request.url_for``): the path of a
    named route. :class:`~trionet.asgi.Router` is one; the request side depends on this
    protocol instead of importing the routing module (which imports the request side)."""

    def url_for(self, name: str, /, **path_params: Any) -> str:
        """The path of the route called ``name``, relative to the router's mount point."""
        ...
