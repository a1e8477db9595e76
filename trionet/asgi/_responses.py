"""Responses: the seed's ``Response`` with its factories, plus streaming and file responses.

A response is built first and sent afterwards. ``await response(send)`` sends it as the seed
does; ``await response(scope, receive, send)`` makes any response an ASGI application too, and
lets a streaming or file response skip producing its body for ``HEAD`` and stop a stream when
the client disconnects. (A complete :class:`Response` hands its body over for ``HEAD`` too: it
is in memory already and the server never transmits it.)
"""

from __future__ import annotations

import json as _json
import mimetypes
import os
import stat as _stat
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from contextlib import aclosing
from datetime import datetime
from email.utils import format_datetime
from http.cookies import SimpleCookie
from typing import Any, ClassVar, Literal, overload
from urllib.parse import quote

import trio

from ._background import BackgroundTask, run_background
from ._datastructures import MutableHeaders, _to_raw
from ._errors import HTTPException
from ._filesend import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_RANGES, FileSender, validator_headers
from ._types import Receive, Scope, Send
from ._util import collapse_single_error

__all__ = ["FileResponse", "Response", "StreamingResponse"]

HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]] | None

# One shared encoder: json.dumps() with non-default options builds a new one per call.
_JSON_ENCODER = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

# Status codes whose responses never carry a body (RFC 9110 §6.4.1).
_NO_BODY_STATUS = frozenset({204, 304})


class Response:
    """An HTTP response with a complete body.

    Build one with the seed's factories, :meth:`text`, :meth:`json` and :meth:`html` (plus
    :meth:`redirect`, :meth:`stream` and :meth:`file`), or directly. ``Content-Length`` and
    ``Content-Type`` (with ``charset`` for text) are set for you unless ``headers`` already
    has them.

    Args:
        content: the body: ``bytes``, or ``str`` (encoded with ``charset``), or ``None``.
        status_code: the HTTP status.
        headers: extra headers, as a mapping or ``(name, value)`` pairs.
        media_type: the body's media type (``Content-Type`` without parameters).
        background: a :class:`BackgroundTask` to run once the response has been sent.

    Attributes:
        status_code: the HTTP status.
        body: the encoded body.
        media_type: the media type.
        background: the task run after the response was sent, or ``None``.
    """

    #: Media type used when none is given to the constructor.
    default_media_type: ClassVar[str | None] = None
    #: Encoding of ``str`` content and the ``charset`` parameter of ``text/*`` types.
    charset: ClassVar[str] = "utf-8"
    background: BackgroundTask | None = None

    def __init__(
        self,
        content: bytes | str | None = None,
        status_code: int = 200,
        headers: HeadersArg = None,
        media_type: str | None = None,
        *,
        background: BackgroundTask | None = None,
    ) -> None:
        if not 100 <= status_code <= 599:
            raise ValueError(f"status_code must be 100-599, got {status_code}")
        self.status_code = status_code
        self.media_type = media_type if media_type is not None else self.default_media_type
        if content is None:
            body = b""
        elif isinstance(content, str):
            body = content.encode(self.charset)
        else:
            body = bytes(content)
        self.body = body
        self._raw_headers = _to_raw(headers) if headers else []
        self._add_default_headers(len(body))
        if background is not None:
            self.background = background

    def _add_default_headers(self, content_length: int | None) -> None:
        raw = self._raw_headers
        has_length = has_type = False
        for name, _ in raw:
            if name == b"content-length":
                has_length = True
            elif name == b"content-type":
                has_type = True
        if (
            content_length is not None
            and not has_length
            and self.status_code not in _NO_BODY_STATUS
            and self.status_code >= 200
        ):
            raw.append((b"content-length", str(content_length).encode("ascii")))
        if self.media_type is not None and not has_type:
            content_type = self.media_type
            if content_type.startswith("text/") and "charset=" not in content_type:
                content_type += f"; charset={self.charset}"
            raw.append((b"content-type", content_type.encode("latin-1")))

    # -- the seed's factories --------------------------------------------------------------

    @classmethod
    def text(
        cls, content: str, status_code: int = 200, headers: HeadersArg = None, *,
        background: BackgroundTask | None = None,
    ) -> Response:
        """A ``text/plain; charset=utf-8`` response."""
        if headers is None and 200 <= status_code <= 599 and status_code not in _NO_BODY_STATUS:
            return _fast(
                status_code, content.encode("utf-8"), "text/plain", _TEXT_PLAIN, background
            )
        return Response(content, status_code, headers, "text/plain", background=background)

    @classmethod
    def json(
        cls, content: Any, status_code: int = 200, headers: HeadersArg = None, *,
        background: BackgroundTask | None = None,
    ) -> Response:
        """An ``application/json`` response; ``content`` is encoded compactly as UTF-8 JSON.

        Raises:
            TypeError: ``content`` is not JSON-serialisable.
            ValueError: ``content`` contains NaN or infinity (not valid JSON).
        """
        body = _JSON_ENCODER.encode(content).encode("utf-8")
        if headers is None:
            if not 200 <= status_code <= 599 or status_code in _NO_BODY_STATUS:
                raise ValueError(f"a JSON response cannot have status {status_code}")
            return _fast(status_code, body, "application/json", _APPLICATION_JSON, background)
        return Response(body, status_code, headers, "application/json", background=background)

    @classmethod
    def html(
        cls, content: str, status_code: int = 200, headers: HeadersArg = None, *,
        background: BackgroundTask | None = None,
    ) -> Response:
        """A ``text/html; charset=utf-8`` response."""
        return Response(content, status_code, headers, "text/html", background=background)

    @classmethod
    def redirect(
        cls, url: str, status_code: int = 307, headers: HeadersArg = None
    ) -> Response:
        """A redirect to ``url`` (307 keeps the method; use 303 after a POST, 301/308 for
        permanent moves)."""
        if not 300 <= status_code <= 399:
            raise ValueError(f"a redirect needs a 3xx status, got {status_code}")
        response = Response(None, status_code, headers)
        response.headers["location"] = quote(url, safe=":/%#?=@[]!$&'()*+,;~")
        return response

    @classmethod
    def stream(
        cls,
        content: AsyncIterable[bytes | str] | Iterable[bytes | str],
        status_code: int = 200,
        headers: HeadersArg = None,
        media_type: str | None = "application/octet-stream",
        *,
        background: BackgroundTask | None = None,
    ) -> StreamingResponse:
        """A response whose body is produced by an (async) iterator; see
        :class:`StreamingResponse`."""
        return StreamingResponse(content, status_code, headers, media_type, background=background)

    @classmethod
    def file(
        cls,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: HeadersArg = None,
        media_type: str | None = None,
        *,
        filename: str | None = None,
        background: BackgroundTask | None = None,
    ) -> FileResponse:
        """A response that sends the file at ``path``; see :class:`FileResponse`."""
        return FileResponse(
            path, status_code, headers, media_type, filename=filename, background=background
        )

    # -- headers and cookies ----------------------------------------------------------------

    @property
    def headers(self) -> MutableHeaders:
        """The response headers; changes are sent with the response."""
        headers = MutableHeaders.__new__(MutableHeaders)
        headers._raw = self._raw_headers
        return headers

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as sent, ``(lower-case name, value)`` byte pairs."""
        return self._raw_headers

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        expires: datetime | int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header.

        Args:
            key: the cookie name.
            value: the cookie value (quoted as needed).
            max_age: lifetime in seconds.
            expires: an absolute expiry time, or seconds from now.
            path: the path scope of the cookie.
            domain: the domain scope of the cookie.
            secure: only send the cookie over HTTPS.
            httponly: hide the cookie from JavaScript.
            samesite: the ``SameSite`` attribute (``None`` omits it).
        """
        cookie: SimpleCookie = SimpleCookie()
        cookie[key] = value
        morsel = cookie[key]
        if max_age is not None:
            morsel["max-age"] = str(max_age)
        if isinstance(expires, datetime):
            morsel["expires"] = format_datetime(expires, usegmt=True)
        elif expires is not None:
            morsel["expires"] = expires
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("lax", "strict", "none"):
                raise ValueError(f"samesite must be 'lax', 'strict' or 'none', got {samesite!r}")
            morsel["samesite"] = samesite
        self.headers.append("set-cookie", morsel.OutputString())

    def delete_cookie(
        self,
        key: str,
        *,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Tell the client to drop cookie ``key`` (an expired, empty ``Set-Cookie``)."""
        self.set_cookie(
            key,
            max_age=0,
            expires=0,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    # -- sending ----------------------------------------------------------------------------

    @overload
    async def __call__(self, send: Send, /) -> None: ...

    @overload
    async def __call__(self, scope: Scope, receive: Receive, send: Send, /) -> None: ...

    async def __call__(self, *args: Any) -> None:
        """Send the response: ``await response(send)`` (as in the seed) or, as an ASGI
        application, ``await response(scope, receive, send)``."""
        if len(args) == 1:
            await send_response(self, None, None, args[0])
        elif len(args) == 3:
            await send_response(self, args[0], args[1], args[2])
        else:
            raise TypeError("call a Response with (send) or (scope, receive, send)")

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        """Send the response through ``send``.

        Override this in a subclass to produce the ASGI messages yourself. ``scope`` and
        ``receive`` are ``None`` when the response is sent with ``await response(send)``.
        """
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self._raw_headers,
            }
        )
        # Also for HEAD: the body is in memory anyway, the server does not transmit it, and
        # middleware that rewrites the body (GZipMiddleware) can then give HEAD the headers GET
        # gets, compressed Content-Length included.
        await send({"type": "http.response.body", "body": self.body})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code} {self.media_type}>"


_TEXT_PLAIN = b"text/plain; charset=utf-8"
_APPLICATION_JSON = b"application/json"


def _fast(
    status_code: int, body: bytes, media_type: str, content_type: bytes,
    background: BackgroundTask | None,
) -> Response:
    # The factories' common case (no extra headers): skip the generic header scan.
    response = Response.__new__(Response)
    response.status_code = status_code
    response.media_type = media_type
    response.body = body
    response._raw_headers = [
        (b"content-length", str(len(body)).encode("ascii")),
        (b"content-type", content_type),
    ]
    if background is not None:
        response.background = background
    return response


class StreamingResponse(Response):
    """A response whose body comes from an async (or plain) iterator of ``bytes``/``str``.

    No ``Content-Length`` is sent (unless you give one), so HTTP/1.1 uses chunked encoding.
    The first chunk is produced *before* the status line is sent, so an iterator that fails
    immediately still gets a proper error response. When the response is sent as an ASGI
    application (with ``receive``), a client disconnect stops the iteration; an async
    generator is always closed (``aclose()``) when sending ends.

    Args:
        content: the body chunks.
        status_code: the HTTP status.
        headers: extra headers.
        media_type: the body's media type.
        background: a :class:`BackgroundTask` to run once the body has been sent.
    """

    def __init__(
        self,
        content: AsyncIterable[bytes | str] | Iterable[bytes | str],
        status_code: int = 200,
        headers: HeadersArg = None,
        media_type: str | None = "application/octet-stream",
        *,
        background: BackgroundTask | None = None,
    ) -> None:
        if not 200 <= status_code <= 599:
            raise ValueError(f"status_code must be 200-599, got {status_code}")
        self.status_code = status_code
        self.media_type = media_type
        self.body = b""
        self.body_iterator = content
        self._raw_headers = _to_raw(headers) if headers else []
        self._add_default_headers(None)
        self.background = background

    def _encode(self, chunk: bytes | str) -> bytes:
        return chunk.encode(self.charset) if isinstance(chunk, str) else bytes(chunk)

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        content = self.body_iterator
        if isinstance(content, AsyncIterable):
            async for chunk in content:
                yield self._encode(chunk)
        else:
            for chunk in content:
                yield self._encode(chunk)
                await trio.lowlevel.checkpoint()

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        """Send the status line, then each chunk as it is produced."""
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self._raw_headers,
        }
        if scope is not None and scope.get("method") == "HEAD":
            await self._close_iterator()
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        if receive is None:
            await self._stream(start, send)
            return
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                await self._stream(start, send)
                nursery.cancel_scope.cancel()

    async def _close_iterator(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _stream(self, start: dict[str, Any], send: Send) -> None:
        try:
            async with aclosing(self._chunks()) as chunks:
                iterator = aiter(chunks)
                first = await anext(iterator, None)
                await send(start)
                if first:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                if first is not None:
                    async for chunk in iterator:
                        if chunk:
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                await send({"type": "http.response.body", "body": b""})
        finally:
            await self._close_iterator()


async def send_response(
    response: Response, scope: Scope | None, receive: Receive | None, send: Send
) -> None:
    """Send ``response``, then run its background task (errors logged, see
    :func:`~trionet.asgi._background.run_background`)."""
    await response.send_to(scope, receive, send)
    if response.background is not None:
        await run_background(response.background)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


class FileResponse(Response):
    """A response that sends a file from disk in chunks, read through :func:`trio.open_file`.

    It answers as :class:`StaticFiles` does: ``ETag``, ``Last-Modified`` and
    ``Accept-Ranges: bytes`` go with the file; when the status is 200, ``If-None-Match`` /
    ``If-Modified-Since`` get 304, ``Range`` gets 206 (one range, or up to ``max_ranges`` as
    ``multipart/byteranges``) or 416, ``If-Range`` is honoured, and ``HEAD`` gets the headers
    without reading the file. ``Content-Type`` is guessed from the file name unless given. A
    missing file, or one that is not a regular file, answers 404.

    Args:
        path: the file to send.
        status_code: the HTTP status.
        headers: extra headers (your ``ETag`` or ``Last-Modified`` replace the file's).
        media_type: the media type; guessed from ``filename`` or ``path`` when ``None``.
        filename: if given, the response carries ``Content-Disposition`` with this name
            (``filename*=`` in UTF-8 when it is not plain ASCII).
        content_disposition_type: ``"attachment"`` (browsers download the file) or
            ``"inline"`` (browsers show it), with ``filename``.
        chunk_size: bytes per read and per ASGI message.
        max_ranges: the most ranges a ``Range`` header may ask for (more: 416).
        background: a :class:`BackgroundTask` to run once the file has been sent.

    Raises:
        ValueError: ``content_disposition_type`` is neither ``attachment`` nor ``inline``, or
            ``chunk_size`` or ``max_ranges`` is below 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: HeadersArg = None,
        media_type: str | None = None,
        *,
        filename: str | None = None,
        content_disposition_type: str = "attachment",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_ranges: int = DEFAULT_MAX_RANGES,
        background: BackgroundTask | None = None,
    ) -> None:
        if content_disposition_type not in ("attachment", "inline"):
            raise ValueError("content_disposition_type must be 'attachment' or 'inline', not "
                             f"{content_disposition_type!r}")
        if chunk_size < 1 or max_ranges < 1:
            raise ValueError("chunk_size and max_ranges must be at least 1")
        self.status_code = status_code
        self.background = background
        self.path = os.fspath(path)
        self.filename = filename
        self.chunk_size = chunk_size
        self.max_ranges = max_ranges
        if media_type is None:
            guessed, _ = mimetypes.guess_type(filename or self.path)
            media_type = guessed or "application/octet-stream"
        self.media_type = media_type
        self.body = b""
        self._raw_headers = _to_raw(headers) if headers else []
        if filename is not None:
            quoted = quote(filename)
            if quoted == filename:
                disposition = f'{content_disposition_type}; filename="{filename}"'
            else:
                disposition = f"{content_disposition_type}; filename*=utf-8''{quoted}"
            self._raw_headers.append((b"content-disposition", disposition.encode("latin-1")))

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        """Open the file, answer the request's conditions and ranges, then send the bytes."""
        try:
            # Checked before opening: opening a FIFO would wait for a writer.
            if not _stat.S_ISREG((await trio.Path(self.path).stat()).st_mode):
                raise HTTPException(404, "not a regular file")
            file = await trio.open_file(self.path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise HTTPException(404, "file not found") from None
        async with file:
            info = os.fstat(file.fileno())  # the file opened decides (it may have changed)
            if not _stat.S_ISREG(info.st_mode):
                raise HTTPException(404, "not a regular file")
            content_type = self.media_type or "application/octet-stream"
            headers: list[tuple[bytes, bytes]] = []
            for name, value in self._raw_headers:
                if name == b"content-type":
                    content_type = value.decode("latin-1")
                elif name != b"content-length":
                    headers.append((name, value))
            if content_type.startswith("text/") and "charset=" not in content_type:
                content_type += f"; charset={self.charset}"
            headers += validator_headers(info, (name for name, _ in headers))
            await FileSender(scope, send, file, info, self.status_code, headers=headers,
                             content_type=content_type, max_ranges=self.max_ranges,
                             chunk_size=self.chunk_size).run()
