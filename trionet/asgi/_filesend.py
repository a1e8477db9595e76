"""Sending an open file as an HTTP response, for :class:`~trionet.asgi.StaticFiles` and
:class:`~trionet.asgi.FileResponse`: validators (``ETag``, ``Last-Modified``), conditional
requests (``If-None-Match``, ``If-Modified-Since`` give 304; ``If-Range``), byte ranges
(``Range`` gives 206 with one range, or several as ``multipart/byteranges``, or 416), bounded
in header size and range count, and ``HEAD``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from ..errors import ASGIError
from ._datastructures import Headers
from ._types import Scope, Send

__all__ = ["DEFAULT_MAX_RANGES", "FileSender", "parse_ranges", "validator_headers"]

#: The most ranges one ``Range`` header may ask for (more get 416).
DEFAULT_MAX_RANGES = 16
# Longest Range header read at all (longer ones get 416).
_MAX_RANGE_HEADER = 1024
#: Bytes per read and per ASGI message, unless told otherwise.
DEFAULT_CHUNK_SIZE = 64 * 1024
_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


def _etag(info: os.stat_result) -> str:
    return f'"{info.st_size:x}-{info.st_mtime_ns:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def validator_headers(info: os.stat_result, present: Iterable[bytes] = ()
                      ) -> list[tuple[bytes, bytes]]:
    """``Accept-Ranges``, ``ETag`` and ``Last-Modified`` of a file, leaving out the names in
    *present* (headers the application set itself)."""
    given = set(present)
    headers = [
        (b"accept-ranges", b"bytes"),
        (b"etag", _etag(info).encode("ascii")),
        (b"last-modified", formatdate(info.st_mtime, usegmt=True).encode("ascii")),
    ]
    return [(name, value) for name, value in headers if name not in given]


def parse_ranges(header: str, size: int, max_ranges: int) -> list[tuple[int, int]] | None:
    """The byte ranges ``(first, last)`` (inclusive) a ``Range`` header asks for, sorted and
    merged; ``None`` if the header is not a ``bytes=`` range set (ignore it, send everything).

    Raises:
        ValueError: no range is satisfiable, or the header is too long or asks for too many
            (answer 416).
    """
    if len(header) > _MAX_RANGE_HEADER:
        raise ValueError("Range header too long")
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    parts = specs.split(",")
    if len(parts) > max_ranges:
        raise ValueError("too many ranges")
    ranges: list[tuple[int, int]] = []
    for part in parts:
        found = _RANGE_SPEC.fullmatch(part)
        if found is None:
            return None
        first_text, last_text = found.groups()
        if first_text:
            first = int(first_text)
            last = int(last_text) if last_text else size - 1
            if last_text and last < first:
                return None  # syntactically invalid: ignore the header
            if first >= size:
                continue  # unsatisfiable, maybe others are not
            ranges.append((first, min(last, size - 1)))
        elif last_text:
            suffix = int(last_text)
            if suffix == 0 or size == 0:
                continue
            ranges.append((max(size - suffix, 0), size - 1))
        else:
            return None
    if not ranges:
        raise ValueError("no satisfiable range")
    ranges.sort()
    merged = [ranges[0]]
    for first, last in ranges[1:]:
        previous_first, previous_last = merged[-1]
        if first <= previous_last + 1:
            merged[-1] = (previous_first, max(previous_last, last))
        else:
            merged.append((first, last))
    return merged


class FileSender:
    """One file response: conditional requests, ranges, then the bytes.

    Args:
        scope: the request's scope (``None``: a plain ``GET`` without conditions).
        send: the ASGI ``send``.
        file: the open file (a :func:`trio.open_file` object).
        info: its ``fstat``.
        status: the status of a whole answer; conditions and ranges apply only to 200.
        headers: the response's headers, without ``Content-Type`` and ``Content-Length``
            (its ``ETag``, if any, is the one ``If-None-Match`` and ``If-Range`` compare).
        content_type: the ``Content-Type`` of the file.
        max_ranges: the most ranges a ``Range`` header may ask for (more: 416).
        chunk_size: bytes per read and per ASGI message.
    """

    def __init__(
        self, scope: Scope | None, send: Send, file: Any, info: os.stat_result, status: int, *,
        headers: list[tuple[bytes, bytes]], content_type: str,
        max_ranges: int = DEFAULT_MAX_RANGES, chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.send = send
        self.file = file
        self.info = info
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.max_ranges = max_ranges
        self.chunk_size = chunk_size
        self.request = Headers(raw=scope.get("headers", []) if scope is not None else [])
        self.head = scope is not None and scope.get("method") == "HEAD"
        self.etag = next((value.decode("latin-1") for name, value in headers if name == b"etag"),
                         _etag(info))

    async def run(self) -> None:
        headers = list(self.headers)
        media_type = self.content_type
        if self.status == 200 and self._not_modified():
            await self._start(304, headers)
            await self.send({"type": "http.response.body", "body": b""})
            return
        size = self.info.st_size
        ranges = None
        range_header = self.request.get("range")
        if range_header is not None and self.status == 200 and self._if_range_holds():
            try:
                ranges = parse_ranges(range_header, size, self.max_ranges)
            except ValueError:
                headers.append((b"content-range", f"bytes */{size}".encode("ascii")))
                headers.append((b"content-length", b"0"))
                await self._start(416, headers)
                await self.send({"type": "http.response.body", "body": b""})
                return
        if ranges is None:
            headers += [(b"content-type", media_type.encode("latin-1")),
                        (b"content-length", str(size).encode("ascii"))]
            await self._start(self.status, headers)
            await self._copy([(0, size - 1)] if size else [], [b""])
        elif len(ranges) == 1:
            first, last = ranges[0]
            headers += [
                (b"content-type", media_type.encode("latin-1")),
                (b"content-range", f"bytes {first}-{last}/{size}".encode("ascii")),
                (b"content-length", str(last - first + 1).encode("ascii")),
            ]
            await self._start(206, headers)
            await self._copy(ranges, [b""])
        else:
            boundary = secrets.token_hex(16)
            heads = [
                (f"--{boundary}\r\nContent-Type: {media_type}\r\n"
                 f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode("latin-1")
                for first, last in ranges
            ]
            separators = [heads[0]] + [b"\r\n" + head for head in heads[1:]]
            tail = f"\r\n--{boundary}--\r\n".encode("ascii")
            length = sum(map(len, separators)) + len(tail) + sum(
                last - first + 1 for first, last in ranges
            )
            headers += [
                (b"content-type", f"multipart/byteranges; boundary={boundary}".encode("ascii")),
                (b"content-length", str(length).encode("ascii")),
            ]
            await self._start(206, headers)
            await self._copy(ranges, [*separators, tail])

    def _not_modified(self) -> bool:
        if_none_match = self.request.get("if-none-match")
        if if_none_match is not None:
            return _etag_matches(if_none_match, self.etag)
        since = self.request.get("if-modified-since")
        if since is None:
            return False
        try:
            return int(self.info.st_mtime) <= int(parsedate_to_datetime(since).timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            return False

    def _if_range_holds(self) -> bool:
        header = self.request.get("if-range")
        if header is None:
            return True
        if_range = str(header).strip()
        if if_range.startswith(('"', "W/")):
            return if_range == self.etag  # the strong comparison
        return if_range == formatdate(self.info.st_mtime, usegmt=True)

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _copy(self, ranges: list[tuple[int, int]], separators: list[bytes]) -> None:
        """Send ``separators[i]`` before range ``i`` and the last separator at the end; the
        last chunk of the file ends the body when no separator follows it."""
        send = self.send
        if self.head:
            await send({"type": "http.response.body", "body": b""})
            return
        pending = b""
        for index, (first, last) in enumerate(ranges):
            pending += separators[index]
            await self.file.seek(first)
            remaining = last - first + 1
            while remaining:
                chunk = await self.file.read(min(self.chunk_size, remaining))
                if not chunk:
                    # The file shrank under us: abort rather than send a short body.
                    raise ASGIError("a file shrank while it was being sent", fault="local")
                remaining -= len(chunk)
                done = not remaining and index == len(ranges) - 1 and not separators[-1]
                await send({"type": "http.response.body", "body": pending + chunk,
                            "more_body": not done})
                if done:
                    return
                pending = b""
        await send({"type": "http.response.body", "body": pending + separators[-1]})
