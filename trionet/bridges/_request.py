"""An HTTP route bound to a bus request: ``POST /orders`` -> request on ``orders/new`` -> reply."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from ..asgi import Request, Response
from ..bus import BusClosed, BusMessage, BusSocket, RequestTimeout
from ..errors import ConfigurationError
from ..observability import CORRELATION_HEADER, correlation_scope, current_correlation_id

__all__ = ["DEFAULT_MAX_REQUEST_SIZE", "HTTP_STATUS_HEADER", "bus_request"]

logger = logging.getLogger("trionet.bridges")

#: The reply header a responder sets to choose the HTTP status (``"404"``; default 200).
HTTP_STATUS_HEADER: Final = "http-status"
#: The default limit on a request body forwarded to the bus, in bytes.
DEFAULT_MAX_REQUEST_SIZE: Final = 64 * 1024
#: A correlation id taken from the client's ``x-request-id``: short, printable, no spaces.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, text: str, correlation_id: str) -> Response:
    return Response.json({"error": text}, status_code=status,
                         headers={CORRELATION_HEADER: correlation_id})


def _status_of(reply: BusMessage) -> int:
    value = reply.headers.get(HTTP_STATUS_HEADER)
    if value is None:
        return 200
    if value.isdigit() and 200 <= int(value) <= 599:
        return int(value)
    logger.warning("bridge: a reply named an invalid %s %r; answering 502",
                   HTTP_STATUS_HEADER, value[:20])
    return 502


def bus_request(
    socket: BusSocket | Callable[[], BusSocket | None],
    topic: str,
    *,
    timeout: float = 5.0,
    max_body_size: int = DEFAULT_MAX_REQUEST_SIZE,
    content_type: str | None = None,
) -> Endpoint:
    """An endpoint that forwards the request body as a bus request and answers with the reply::

        router.add_route("/orders", bus_request(gateway, "orders/new"), methods=["POST"])

    The body (at most *max_body_size* bytes, else 413) becomes the payload of a
    :class:`~trionet.bus.BusMessage` on *topic*, with the request's ``Content-Type``; it is
    sent with :meth:`BusSocket.request <trionet.bus.BusSocket.request>`, and the reply's
    payload and content type become the response. A responder chooses the status with the
    ``http-status`` reply header (:data:`HTTP_STATUS_HEADER`, 200 by default).

    Failures are answers, never a 500: no reply within *timeout* seconds is a 504, and so is
    a request nobody listens to (the bus cannot tell "no responder" from "no reply in time");
    a socket that is not open (not yet, or closing) is a 503.

    The correlation id travels: the current one (the request id set by
    :class:`~trionet.asgi.RequestIdMiddleware`), else the client's ``x-request-id`` when it
    is a short token, else a fresh one, goes out in the request's ``x-correlation-id`` header
    (the responder's logs and replies carry it) and comes back in the response's.

    Args:
        socket: the bus socket to send requests on (one open socket serves every request), or a
            callable returning it (``None`` while there is none: 503).
        topic: where requests go.
        timeout: seconds to wait for the reply.
        max_body_size: the largest request body forwarded, in bytes.
        content_type: the request payload's content type (default: the request's
            ``Content-Type``).
    """
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(max_body_size, int) or max_body_size < 0:
        raise ConfigurationError(f"max_body_size must be an int >= 0, got {max_body_size!r}")
    get_socket: Callable[[], BusSocket | None] = (
        (lambda: socket) if isinstance(socket, BusSocket) else socket
    )

    async def forward(request: Request) -> Response:
        correlation_id = current_correlation_id()
        if correlation_id is None:
            offered = request.headers.get("x-request-id", "")
            correlation_id = offered if _SAFE_ID.fullmatch(offered) else secrets.token_hex(8)
        request.max_body_size = max_body_size
        body = await request.body()  # 413 past the limit
        bus = get_socket()
        if bus is None or bus.closed:
            return _error(503, f"the bus is not available for {topic!r}", correlation_id)
        message = BusMessage(body, topic, content_type=content_type or request.content_type,
                             headers={CORRELATION_HEADER: correlation_id})
        try:
            with correlation_scope(correlation_id):
                reply = await bus.request(message, timeout=timeout)
        except RequestTimeout:
            return _error(504, f"no reply on {topic!r} within {timeout:g} s", correlation_id)
        except BusClosed:
            return _error(503, f"the bus is not available for {topic!r}", correlation_id)
        return Response(reply.payload, status_code=_status_of(reply),
                        media_type=reply.content_type or "application/octet-stream",
                        headers={CORRELATION_HEADER: correlation_id})

    return forward
