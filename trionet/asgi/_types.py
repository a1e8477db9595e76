"""ASGI 3 type aliases shared by every module of :mod:`trionet.asgi`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

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
