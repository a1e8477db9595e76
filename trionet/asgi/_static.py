"""Static files: :class:`StaticFiles`, an ASGI application serving a directory.

Paths are checked before the file system is touched: a request path with a ``..`` segment, an
encoded slash or backslash (``%2F``, ``%5C``), a NUL or a backslash, or (by default) a segment
starting with ``.``, is answered with 404. The file found is then resolved with symlinks
followed and must still lie inside the directory, unless ``follow_symlinks=True`` opts out.
Only regular files are served (no FIFOs or devices), opened without following a final symlink.

Responses carry ``ETag``, ``Last-Modified`` and ``Accept-Ranges``; ``If-None-Match`` /
``If-Modified-Since`` give 304, ``Range`` gives 206 (one range, or several as
``multipart/byteranges``) or 416, bounded in header size and range count.
"""

from __future__ import annotations

import mimetypes
import os
import re
import secrets
import stat as _stat
from collections.abc import Iterable
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import trio

from ..errors import ASGIError
from ._datastructures import Headers
from ._responses import Response
from ._types import Receive, Scope, Send

__all__ = ["DEFAULT_MAX_RANGES", "StaticFiles"]

#: The most ranges one ``Range`` header may ask for (more get 416).
DEFAULT_MAX_RANGES = 16
# Longest Range header read at all (longer ones get 416).
_MAX_RANGE_HEADER = 1024
_CHUNK = 64 * 1024
_ENCODED_FORBIDDEN = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)
_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


class _NotFound(Exception):
    pass


def _etag(info: os.stat_result) -> str:
    return f'"{info.st_size:x}-{info.st_mtime_ns:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


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


def _open_no_follow(path: str, flags: int) -> int:
    # O_NOFOLLOW: the last component may not be a symlink swapped in after the check;
    # O_NONBLOCK: opening a FIFO never waits for a writer (it is refused after fstat).
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


class StaticFiles:
    """Serves the files under ``directory``; mount it: ``router.mount("/static",
    StaticFiles(directory="public"))``.

    ``GET`` and ``HEAD`` only (405 otherwise). A directory answers 404, or with ``html=True``
    its ``index.html`` (a directory path without its final ``/`` is redirected to it first),
    and a missing file then serves ``404.html`` with status 404 if there is one.

    Args:
        directory: the directory to serve.
        html: serve ``index.html`` for directories and ``404.html`` for missing files.
        follow_symlinks: serve files whose real path lies outside ``directory`` through
            symlinks inside it (off: such a file answers 404).
        allow_dotfiles: serve paths with a segment starting with ``.`` (off: ``.env``,
            ``.git/config`` answer 404).
        check_dir: raise at construction if ``directory`` is not a directory.
        max_ranges: the most ranges a ``Range`` header may ask for (more: 416).
        cache_control: a ``Cache-Control`` value for every file response, if given.

    Raises:
        ASGIError: ``check_dir`` and ``directory`` is not a directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        html: bool = False,
        follow_symlinks: bool = False,
        allow_dotfiles: bool = False,
        check_dir: bool = True,
        max_ranges: int = DEFAULT_MAX_RANGES,
        cache_control: str | None = None,
    ) -> None:
        self.directory = Path(os.path.abspath(directory))
        if check_dir and not self.directory.is_dir():
            raise ASGIError(f"StaticFiles directory {str(directory)!r} does not exist",
                            fault="local")
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be at least 1, got {max_ranges}")
        self.html = html
        self.follow_symlinks = follow_symlinks
        self.allow_dotfiles = allow_dotfiles
        self.max_ranges = max_ranges
        self.cache_control = cache_control
        self._real_directory: Path | None = None

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ``http`` request."""
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1000})
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            response = Response.text("Method Not Allowed", 405, {"Allow": "GET, HEAD"})
            await response.send_to(scope, receive, send)
            return
        await self._serve(scope, receive, send)

    def _segments(self, scope: Scope) -> list[str] | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        raw = scope.get("raw_path") or b""
        if _ENCODED_FORBIDDEN.search(raw) or "\0" in path or "\\" in path:
            return None
        segments = [part for part in path.split("/") if part not in ("", ".")]
        for part in segments:
            if part == ".." or (part.startswith(".") and not self.allow_dotfiles):
                return None
        return segments

    async def _real_root(self) -> Path:
        if self._real_directory is None:
            self._real_directory = Path(await trio.Path(self.directory).resolve())
        return self._real_directory

    async def _locate(self, segments: list[str]) -> tuple[str, os.stat_result]:
        """The path to open and its ``stat`` (symlinks followed); raises :class:`_NotFound`."""
        candidate = self.directory.joinpath(*segments)
        try:
            real = Path(await trio.Path(candidate).resolve(strict=True))
            if not self.follow_symlinks and not real.is_relative_to(await self._real_root()):
                raise _NotFound
            info = await trio.Path(real).stat()
        except (OSError, ValueError):
            raise _NotFound from None
        return str(real), info

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        segments = self._segments(scope)
        if segments is None:
            await self._not_found(scope, receive, send)
            return
        try:
            path, info = await self._locate(segments)
            if _stat.S_ISDIR(info.st_mode):
                if not self.html:
                    raise _NotFound
                if not scope["path"].endswith("/"):
                    await self._redirect_to_directory(scope, receive, send)
                    return
                path, info = await self._locate([*segments, "index.html"])
        except _NotFound:
            await self._not_found(scope, receive, send)
            return
        await self._send_file(scope, receive, send, path, info, 200)

    async def _redirect_to_directory(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        location = raw.decode("latin-1") + "/"
        query = scope.get("query_string", b"")
        if query:
            location += "?" + query.decode("latin-1")
        await Response.redirect(location, 307).send_to(scope, receive, send)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.html:
            try:
                path, info = await self._locate(["404.html"])
            except _NotFound:
                pass
            else:
                await self._send_file(scope, receive, send, path, info, 404)
                return
        await Response.text("Not Found", 404).send_to(scope, receive, send)

    # -- sending -----------------------------------------------------------------------------

    def _headers(self, info: os.stat_result) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"accept-ranges", b"bytes"),
            (b"etag", _etag(info).encode("ascii")),
            (b"last-modified", formatdate(info.st_mtime, usegmt=True).encode("ascii")),
        ]
        if self.cache_control is not None:
            headers.append((b"cache-control", self.cache_control.encode("latin-1")))
        return headers

    async def _send_file(
        self, scope: Scope, receive: Receive, send: Send, path: str, info: os.stat_result,
        status: int,
    ) -> None:
        try:
            file = await trio.open_file(path, "rb", opener=_open_no_follow)
        except OSError:
            await Response.text("Not Found", 404).send_to(scope, receive, send)
            return
        async with file:
            # The file actually opened decides (it may have changed since the lookup).
            info = os.fstat(file.fileno())
            if not _stat.S_ISREG(info.st_mode):
                await Response.text("Not Found", 404).send_to(scope, receive, send)
                return
            await _FileSender(self, scope, send, file, info, status).run(path)


class _FileSender:
    """One file response: conditional requests, ranges, then the bytes."""

    def __init__(
        self, owner: StaticFiles, scope: Scope, send: Send, file: Any, info: os.stat_result,
        status: int,
    ) -> None:
        self.owner = owner
        self.scope = scope
        self.send = send
        self.file = file
        self.info = info
        self.status = status
        self.headers = Headers(raw=scope.get("headers", []))
        self.head = scope["method"] == "HEAD"

    async def run(self, path: str) -> None:
        info = self.info
        headers = self.owner._headers(info)
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type == "application/javascript":
            media_type += "; charset=utf-8"
        if self.status == 200 and self._not_modified():
            await self._start(304, headers)
            await self.send({"type": "http.response.body", "body": b""})
            return
        size = info.st_size
        ranges = None
        range_header = self.headers.get("range")
        if range_header is not None and self.status == 200 and self._if_range_holds():
            try:
                ranges = parse_ranges(range_header, size, self.owner.max_ranges)
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
        if_none_match = self.headers.get("if-none-match")
        if if_none_match is not None:
            return _etag_matches(if_none_match, _etag(self.info))
        since = self.headers.get("if-modified-since")
        if since is None:
            return False
        try:
            return int(self.info.st_mtime) <= int(parsedate_to_datetime(since).timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            return False

    def _if_range_holds(self) -> bool:
        header = self.headers.get("if-range")
        if header is None:
            return True
        if_range = str(header).strip()
        if if_range.startswith(('"', "W/")):
            return if_range == _etag(self.info)  # the strong comparison
        return if_range == formatdate(self.info.st_mtime, usegmt=True)

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _copy(self, ranges: Iterable[tuple[int, int]], separators: list[bytes]) -> None:
        """Send ``separators[i]`` before range ``i`` and the last separator at the end."""
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
                chunk = await self.file.read(min(_CHUNK, remaining))
                if not chunk:
                    # The file shrank under us: abort rather than send a short body.
                    raise ASGIError("a static file shrank while it was being sent",
                                    fault="local")
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": pending + chunk,
                            "more_body": True})
                pending = b""
        await send({"type": "http.response.body", "body": pending + separators[-1]})
