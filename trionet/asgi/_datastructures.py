"""Immutable and mutable multi-value mappings, URLs and small value types used by requests.

Header names are compared case-insensitively and kept in ASGI's lower-case byte form; values
are latin-1 (the only lossless mapping of HTTP header bytes to ``str``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

__all__ = [
    "URL",
    "Address",
    "FormData",
    "Headers",
    "MutableHeaders",
    "QueryParams",
    "State",
    "UploadFile",
    "parse_cookie_header",
    "parse_options_header",
]

_V = TypeVar("_V")
RawHeaders = list[tuple[bytes, bytes]]


class Address(NamedTuple):
    """A peer's network address as reported by the server (``scope["client"]``)."""

    host: str
    port: int


class Headers(Mapping[str, str]):
    """Case-insensitive, multi-value, read-only view of HTTP headers.

    ``headers["content-type"]`` and ``headers.get(...)`` return the *first* value of a header;
    :meth:`getlist` returns all of them in order, and :meth:`multi_items` all pairs (iteration
    and ``len()`` see each name once, so the object is a proper ``Mapping``).

    Args:
        raw: ``(name, value)`` byte pairs as found in an ASGI scope, or ``str`` pairs, or a
            mapping of ``str`` to ``str``.
    """

    __slots__ = ("_raw",)

    def __init__(
        self,
        raw: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]] | Mapping[str, str] = (),
    ) -> None:
        self._raw: RawHeaders = _to_raw(raw)

    @property
    def raw(self) -> RawHeaders:
        """The headers as a list of ``(lower-case name, value)`` byte pairs."""
        return self._raw

    def __getitem__(self, key: str) -> str:
        name = key.lower().encode("latin-1")
        for k, v in self._raw:
            if k == name:
                return v.decode("latin-1")
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of header ``key``, or ``default``."""
        name = key.lower().encode("latin-1")
        for k, v in self._raw:
            if k == name:
                return v.decode("latin-1")
        return default

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = key.lower().encode("latin-1")
        return any(k == name for k, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return list(dict.fromkeys(k.decode("latin-1") for k, _ in self._raw))

    def getlist(self, key: str) -> list[str]:
        """Every value of header ``key``, in the order received (``[]`` if absent)."""
        name = key.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k == name]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair, duplicates included, in the order received."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._raw) == sorted(other._raw)
        return NotImplemented

    def __hash__(self) -> int:  # pragma: no cover - mutable subclass makes this unhashable
        return hash(tuple(sorted(self._raw)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.multi_items()!r})"


class MutableHeaders(Headers):
    """Headers of a response being built: like :class:`Headers`, plus mutation.

    ``headers[name] = value`` replaces every existing value of ``name``; :meth:`append` adds
    another value (as ``Set-Cookie`` needs).
    """

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __setitem__(self, key: str, value: str) -> None:
        name = key.lower().encode("latin-1")
        encoded = _encode_value(value)
        self._raw[:] = [(k, v) for k, v in self._raw if k != name]
        self._raw.append((name, encoded))

    def __delitem__(self, key: str) -> None:
        name = key.lower().encode("latin-1")
        before = len(self._raw)
        self._raw[:] = [(k, v) for k, v in self._raw if k != name]
        if len(self._raw) == before:
            raise KeyError(key)

    def append(self, key: str, value: str) -> None:
        """Add a value for ``key`` without removing the existing ones."""
        self._raw.append((key.lower().encode("latin-1"), _encode_value(value)))

    def setdefault(self, key: str, value: str) -> str:
        """Set ``key`` to ``value`` unless present; return the (first) value now stored."""
        existing: str | None = self.get(key)
        if existing is not None:
            return existing
        self.append(key, value)
        return value

    def update(self, other: Mapping[str, str]) -> None:
        """Set every header of ``other`` (replacing existing values of the same names)."""
        for key, value in other.items():
            self[key] = value


def _encode_value(value: str) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value contains a line break: {value!r}")
    return value.encode("latin-1")


def _to_raw(
    raw: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]] | Mapping[str, str],
) -> RawHeaders:
    items: Iterable[tuple[Any, Any]] = raw.items() if isinstance(raw, Mapping) else raw
    out: RawHeaders = []
    for k, v in items:
        if isinstance(k, str):
            out.append((k.lower().encode("latin-1"), _encode_value(v)))
        else:
            out.append((bytes(k).lower(), bytes(v)))
    return out


class _MultiDict(Mapping[str, _V]):
    """Read-only ordered multi-value mapping; ``m[key]`` is the *last* value, as in forms."""

    __slots__ = ("_dict", "_list")

    def __init__(self, items: Iterable[tuple[str, _V]] = ()) -> None:
        self._list: list[tuple[str, _V]] = list(items)
        self._dict: dict[str, _V] = dict(self._list)

    def __getitem__(self, key: str) -> _V:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def getlist(self, key: str) -> list[_V]:
        """Every value of ``key`` in order (``[]`` if absent)."""
        return [v for k, v in self._list if k == key]

    def multi_items(self) -> list[tuple[str, _V]]:
        """Every ``(key, value)`` pair, duplicates included, in order."""
        return list(self._list)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _MultiDict):
            return sorted(map(repr, self._list)) == sorted(map(repr, other._list))
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"


class QueryParams(_MultiDict[str]):
    """The decoded query string: ``params["page"]`` (last value) and ``params.getlist("tag")``.

    Args:
        query: the raw query string (bytes or str, without ``?``) or ``(key, value)`` pairs.
    """

    __slots__ = ()

    def __init__(self, query: bytes | str | Iterable[tuple[str, str]] = b"") -> None:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        if isinstance(query, str):
            super().__init__(parse_qsl(query, keep_blank_values=True))
        else:
            super().__init__(query)

    def __str__(self) -> str:
        return urlencode(self._list)


class UploadFile:
    """A file received in a ``multipart/form-data`` body (held in memory, size-limited).

    Attributes:
        filename: the client-supplied file name (never trust it as a path).
        content_type: the part's ``Content-Type`` (``application/octet-stream`` if absent).
        headers: all headers of the part.
        content: the file's bytes.
    """

    __slots__ = ("content", "content_type", "filename", "headers")

    def __init__(
        self, filename: str, content: bytes, content_type: str, headers: Headers | None = None
    ) -> None:
        self.filename = filename
        self.content = content
        self.content_type = content_type
        self.headers = headers if headers is not None else Headers()

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return len(self.content)

    def text(self, encoding: str = "utf-8") -> str:
        """The content decoded as text."""
        return self.content.decode(encoding)

    def __repr__(self) -> str:
        return (
            f"UploadFile(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"size={self.size})"
        )


class FormData(_MultiDict["str | UploadFile"]):
    """A parsed form: text fields map to ``str``, file fields to :class:`UploadFile`."""

    __slots__ = ()


class URL(str):
    """A full request URL; a ``str`` with parsed components.

    ``str(request.url)`` is the whole URL; ``request.url.path``, ``.query``, ``.hostname`` etc.
    give its parts.
    """

    __slots__ = ()

    @property
    def _split(self) -> SplitResult:
        return urlsplit(self)

    @property
    def scheme(self) -> str:
        """``http``, ``https``, ``ws`` or ``wss``."""
        return self._split.scheme

    @property
    def netloc(self) -> str:
        """``host[:port]`` as the client sent it."""
        return self._split.netloc

    @property
    def hostname(self) -> str | None:
        """The host without port, lower-cased."""
        return self._split.hostname

    @property
    def port(self) -> int | None:
        """The explicit port, or ``None``."""
        return self._split.port

    @property
    def path(self) -> str:
        """The path component."""
        return self._split.path

    @property
    def query(self) -> str:
        """The query string without ``?``."""
        return self._split.query

    @property
    def fragment(self) -> str:
        """The fragment without ``#``."""
        return self._split.fragment

    def copy_with(self, **components: str) -> URL:
        """A copy with some of ``scheme``, ``netloc``, ``path``, ``query``, ``fragment``
        replaced."""
        return URL(self._split._replace(**components).geturl())


class State:
    """An attribute namespace stored in a dict (``request.state.user = ...``)."""

    __slots__ = ("_state",)

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", state if state is not None else {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state[name]
        except KeyError:
            raise AttributeError(f"state has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._state[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._state[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name: str) -> bool:
        return name in self._state

    def __repr__(self) -> str:
        return f"State({self._state!r})"


def parse_options_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``text/html; charset="utf-8"`` into ``("text/html", {"charset": "utf-8"})``.

    Parameter names are lower-cased; quoted strings may contain ``;`` and backslash escapes;
    RFC 5987 ``name*=UTF-8''...`` values are decoded and win over the plain ``name=`` value.
    """
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        start = i
        while i < n and rest[i] not in "=;":
            i += 1
        name = rest[start:i].strip().lower()
        if i >= n or rest[i] == ";":
            if name:
                params[name] = ""
            continue
        i += 1  # skip "="
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1  # closing quote
            val = "".join(chars)
            while i < n and rest[i] != ";":
                i += 1
        else:
            start = i
            while i < n and rest[i] != ";":
                i += 1
            val = rest[start:i].strip()
        if name.endswith("*"):
            extended[name[:-1]] = _decode_rfc5987(val)
        elif name:
            params[name] = val
    params.update(extended)
    return main.strip().lower(), params


def _decode_rfc5987(value: str) -> str:
    from urllib.parse import unquote

    charset, sep, rest = value.partition("'")
    if not sep:
        return unquote(value)
    _language, _, encoded = rest.partition("'")
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return unquote(encoded, encoding="latin-1")


def parse_cookie_header(value: str) -> dict[str, str]:
    """Parse a ``Cookie`` request header into a dict (lenient, as browsers are)."""
    cookies: dict[str, str] = {}
    for chunk in value.split(";"):
        name, sep, val = chunk.partition("=")
        if not sep:
            name, val = "", name
        name, val = name.strip(), val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        if name or val:
            cookies[name] = val
    return cookies


def join_header_values(values: Sequence[str]) -> str:
    """Join several values of one header with ``, `` (RFC 9110 list syntax)."""
    return ", ".join(values)
