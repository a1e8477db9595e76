"""Authentication: a pluggable backend sets ``request.user`` and ``request.auth``; ``requires()``
guards handlers by scope.

An :class:`AuthenticationMiddleware` asks its backend about every ``http`` and ``websocket``
connection. The backend reads whatever it trusts (a session, an ``Authorization`` header, a
client certificate) and returns the user and the scopes they hold, or ``None`` for an anonymous
client, or raises :class:`AuthenticationError` for credentials that are present but wrong.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

from ..errors import ASGIError
from ._errors import HTTPException
from ._requests import HTTPConnection, Request
from ._responses import Response
from ._types import ASGIApp, Receive, Scope, Send
from ._websockets import WebSocket

__all__ = [
    "AuthCredentials",
    "AuthenticationBackend",
    "AuthenticationError",
    "AuthenticationMiddleware",
    "BaseUser",
    "SimpleUser",
    "UnauthenticatedUser",
    "requires",
]

logger = logging.getLogger("trionet.asgi")

_H = TypeVar("_H", bound=Callable[..., Awaitable[Any]])


class AuthenticationError(ASGIError):
    """Credentials were presented but are not valid (answered with 401 by default)."""

    def __init__(self, message: str = "invalid credentials") -> None:
        super().__init__(message, fault="remote")


class AuthCredentials:
    """What an authenticated client may do: a set of scope names (``"authenticated"``,
    ``"admin"``...).

    Args:
        scopes: the scopes granted.
    """

    def __init__(self, scopes: Iterable[str] = ()) -> None:
        self.scopes: frozenset[str] = frozenset(scopes)

    def __repr__(self) -> str:
        return f"AuthCredentials({sorted(self.scopes)!r})"


class BaseUser:
    """Base class of users; subclass it with your own fields."""

    @property
    def is_authenticated(self) -> bool:
        """Whether this is a real (logged-in) user."""
        raise NotImplementedError

    @property
    def display_name(self) -> str:
        """A name to show."""
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """A stable identifier (a user id, a user name)."""
        raise NotImplementedError


class SimpleUser(BaseUser):
    """An authenticated user known by a name.

    Args:
        username: the user's name (also its identity).
    """

    def __init__(self, username: str) -> None:
        self.username = username

    @property
    def is_authenticated(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def display_name(self) -> str:
        """The user name."""
        return self.username

    @property
    def identity(self) -> str:
        """The user name."""
        return self.username

    def __repr__(self) -> str:
        return f"SimpleUser({self.username!r})"


class UnauthenticatedUser(BaseUser):
    """The user of a connection the backend did not authenticate."""

    @property
    def is_authenticated(self) -> bool:
        """Always ``False``."""
        return False

    @property
    def display_name(self) -> str:
        """An empty string."""
        return ""

    @property
    def identity(self) -> str:
        """An empty string."""
        return ""

    def __repr__(self) -> str:
        return "UnauthenticatedUser()"


class AuthenticationBackend(Protocol):
    """What :class:`AuthenticationMiddleware` asks: an object with this coroutine method."""

    async def authenticate(
        self, conn: HTTPConnection
    ) -> tuple[AuthCredentials, BaseUser] | None:
        """The credentials and user of ``conn``, or ``None`` for an anonymous connection.

        Raises:
            AuthenticationError: credentials are present but invalid.
        """
        ...


OnError = Callable[[HTTPConnection, AuthenticationError], Response]


def _default_on_error(conn: HTTPConnection, error: AuthenticationError) -> Response:
    return Response.json({"error": str(error)}, 401)


class AuthenticationMiddleware:
    """Sets ``scope["user"]`` and ``scope["auth"]`` (``request.user``, ``request.auth``) from a
    backend, for ``http`` and ``websocket`` connections.

    Add it inside (before) a :class:`SessionMiddleware` whose session the backend reads::

        app.add_middleware(AuthenticationMiddleware, backend=SessionBackend())
        app.add_middleware(SessionMiddleware, secret_key=SECRET)   # outermost

    Args:
        app: the wrapped application.
        backend: the :class:`AuthenticationBackend`.
        on_error: builds the response for an :class:`AuthenticationError` (default: 401 with
            ``{"error": message}``); a websocket is closed with 1008 instead.
    """

    def __init__(
        self, app: ASGIApp, *, backend: AuthenticationBackend, on_error: OnError | None = None
    ) -> None:
        self.app = app
        self.backend = backend
        self.on_error = on_error if on_error is not None else _default_on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then pass the connection on (or refuse it)."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        try:
            result = await self.backend.authenticate(conn)
        except AuthenticationError as error:
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.on_error(conn, error).send_to(scope, receive, send)
            return
        if result is None:
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
        else:
            scope["auth"], scope["user"] = result
        await self.app(scope, receive, send)


def requires(
    scopes: str | Sequence[str],
    *,
    status_code: int = 403,
    redirect: str | None = None,
) -> Callable[[_H], _H]:
    """Decorator: the handler runs only for a connection whose ``request.auth`` holds every
    one of ``scopes``.

    Otherwise an HTTP request gets ``status_code`` (403 by default; 401 makes sense for
    "log in first"), or, with ``redirect=``, a 303 to that path with ``?next=`` the requested
    URL's path and query; a websocket is rejected with ``status_code`` before it is accepted.
    Use it under the route decorator::

        @router.route("/admin")
        @requires(["authenticated", "admin"])
        async def admin(request: Request) -> Response:
            ...

    Raises:
        ASGIError: at request time, if no :class:`AuthenticationMiddleware` ran.
    """
    wanted = frozenset([scopes] if isinstance(scopes, str) else scopes)

    def decorator(handler: _H) -> _H:
        @functools.wraps(handler)
        async def guarded(conn: HTTPConnection, /, *args: Any, **kwargs: Any) -> Any:
            if wanted <= conn.auth.scopes:
                return await handler(conn, *args, **kwargs)
            if isinstance(conn, WebSocket):
                await conn.reject(status_code)
                return None
            if redirect is not None and isinstance(conn, Request):
                target = conn.url.path
                if conn.url.query:
                    target += "?" + conn.url.query
                return Response.redirect(f"{redirect}?{_next_query(target)}", 303)
            raise HTTPException(status_code)

        return guarded  # type: ignore[return-value]

    return decorator


def _next_query(target: str) -> str:
    return urlencode({"next": target})
