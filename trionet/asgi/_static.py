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
import stat as _stat
from pathlib import Path

import trio

from ..errors import ASGIError
from ._filesend import DEFAULT_MAX_RANGES, FileSender, parse_ranges, validator_headers
from ._responses import Response
from ._types import Receive, Scope, Send

__all__ = ["DEFAULT_MAX_RANGES", "StaticFiles", "parse_ranges"]

_ENCODED_FORBIDDEN = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)


class _NotFound(Exception):
    pass


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
            media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
            if media_type.startswith("text/") or media_type == "application/javascript":
                media_type += "; charset=utf-8"
            headers = validator_headers(info)
            if self.cache_control is not None:
                headers.append((b"cache-control", self.cache_control.encode("latin-1")))
            await FileSender(scope, send, file, info, status, headers=headers,
                             content_type=media_type, max_ranges=self.max_ranges).run()
