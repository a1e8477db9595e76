"""Exceptions of the ASGI framework; all derive from :class:`trionet.errors.ASGIError`."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from ..errors import ASGIError

__all__ = [
    "ClientDisconnect",
    "HTTPException",
    "ValidationError",
    "WebSocketDisconnect",
    "WebSocketRejected",
]


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


class HTTPException(ASGIError):
    """Raise from a handler (or anything it calls) to answer with an HTTP error status.

    The application turns it into a response with ``status_code`` and a JSON body
    ``{"error": detail}``; :meth:`ASGIApplication.http_exception_response` can be overridden to
    change that format. Unlike other exceptions it never reaches
    :meth:`ASGIApplication.handle_error`, so an override of ``handle_error`` that answers 500 for
    "everything else" still answers 404 for unknown paths.

    Args:
        status_code: an HTTP status code, 400-599 (3xx is allowed for redirects).
        detail: a human-readable message; defaults to the status code's reason phrase.
        headers: extra response headers (for example ``Allow`` for 405, ``WWW-Authenticate``
            for 401).

    Attributes:
        status_code: the HTTP status.
        detail: the message sent to the client.
        headers: extra headers for the error response.
    """

    def __init__(
        self,
        status_code: int,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 300 <= status_code <= 599:
            raise ValueError(f"HTTPException status_code must be 300-599, got {status_code}")
        self.status_code: int = status_code
        self.detail = detail if detail is not None else _phrase(status_code)
        self.headers: dict[str, str] = dict(headers) if headers else {}
        super().__init__(
            f"{status_code} {self.detail}", fault="local" if status_code >= 500 else "remote"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, detail={self.detail!r})"


def http_exception_for(error: BaseException) -> HTTPException | None:
    """The :class:`HTTPException` that ``error`` answers with: itself, or one made from an
    :class:`~trionet.errors.ASGIError` raised with mtaio's ``status_code=`` (its message as the
    detail); ``None`` for anything else."""
    if isinstance(error, HTTPException):
        return error
    if (
        isinstance(error, ASGIError)
        and error.status_code is not None
        and not isinstance(error, WebSocketRejected)
    ):
        return HTTPException(error.status_code, str(error) or None)
    return None


class ValidationError(ASGIError, ValueError):
    """The request's content is well-formed but not acceptable (answered with 400).

    This is the ``ValidationError`` of mtaio's error-handling example: the default
    :meth:`ASGIApplication.handle_error` answers it with status 400 and
    ``{"error": str(error)}``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, fault="remote")


class ClientDisconnect(ASGIError):
    """The client went away while the application was still reading the request body."""

    def __init__(self, message: str = "the client disconnected") -> None:
        super().__init__(message, fault="remote")


class WebSocketDisconnect(ASGIError):
    """The websocket is closed: the peer closed it, the connection dropped, or we closed it.

    Raised by ``receive()`` on a closed websocket, on both the server side
    (:class:`~trionet.asgi.WebSocket`) and the client side
    (:class:`~trionet.asgi.WebSocketClient`). A handler that lets it escape ends normally.

    Attributes:
        code: the close code (1000 normal, 1006 abnormal closure without a close frame, 1009
            message too big, ...).
        reason: the close reason sent with the close frame, if any.
    """

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""
        text = f"websocket closed with code {code}"
        if reason:
            text += f" ({reason})"
        super().__init__(text, fault="remote")


class WebSocketRejected(ASGIError):
    """The server refused a websocket handshake with an HTTP response instead of accepting.

    Attributes:
        status_code: the HTTP status of the rejection (403 when the application closed the
            websocket before accepting it).
        headers: the rejection's headers as ``(name, value)`` pairs.
        body: the rejection's body.
    """

    def __init__(
        self, status_code: int, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        self.status_code: int = status_code
        self.headers = headers or []
        self.body = body
        super().__init__(
            f"websocket handshake rejected with HTTP {status_code}", fault="remote"
        )
