"""Codecs: turn Python values into bytes and back.

A codec is any object with a ``name`` and two methods, ``encode(value) -> bytes`` and
``decode(data) -> value`` (see :class:`Codec`). trionet ships three:

* :class:`JSON`: UTF-8 JSON, compact separators. The default of aiomas 2.x channels.
* :class:`MsgPack`: MessagePack with the ``bin`` type for :class:`bytes` and ``str`` for text.
* :class:`ZiProto`: the AsyncAProto content-encoding 1. The ``ziproto`` 1.0 package writes exactly
  the bytes msgpack writes (with the ``bin`` type), so this codec is msgpack underneath: about 30×
  faster than the pure-Python package, and it also decodes arrays and maps of 16 entries or more,
  which the package cannot.

Decoding never raises anything but :class:`~trionet.errors.CodecError`, whatever the input.
Nesting is bounded: a value nested deeper than the codec's ``max_depth`` (arrays, maps/objects
and extension values each count one level; :data:`DEFAULT_MAX_DEPTH` unless the codec was made
with another) is refused with :class:`~trionet.errors.CodecError` before anything deep is built,
and registered serializers nest at most :data:`MAX_EXT_DEPTH` extension values inside one
another. :func:`check_depth` is the same bound for code that decodes JSON or MessagePack itself.
Encoding a value the codec does not know raises :class:`~trionet.errors.CodecError` with
``fault="local"``.

Codecs can learn new types with :meth:`SerializingCodec.add_serializer` (aiomas's idea)::

    codec = MsgPack()
    codec.add_serializer(Point, lambda p: [p.x, p.y], lambda d: Point(*d))

Serializers for common standard-library types come ready-made, as factories in aiomas's
``extra_serializers`` shape (call one, pass the tuple to ``add_serializer``):
:func:`datetime_serializer`, :func:`date_serializer`, :func:`uuid_serializer` and
:func:`decimal_serializer`, all four in :data:`STANDARD_SERIALIZERS`::

    import datetime, uuid
    codec = JSON()
    for factory in STANDARD_SERIALIZERS:
        codec.add_serializer(*factory())
    when = datetime.datetime(2026, 12, 7, 21, 30, tzinfo=datetime.UTC)
    assert codec.decode(codec.encode({"at": when})) == {"at": when}

:func:`get_codec` makes a fresh codec by name (each connection usually owns one), and
:func:`register_codec` adds names.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import decimal
import itertools
import json
import json.decoder
import json.encoder
import sys
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgpack
from msgpack import unpackb

from .errors import CodecError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "JSON",
    "MAX_EXT_DEPTH",
    "STANDARD_SERIALIZERS",
    "Codec",
    "MsgPack",
    "SerializingCodec",
    "ZiProto",
    "available_codecs",
    "check_depth",
    "date_serializer",
    "datetime_serializer",
    "decimal_serializer",
    "decode_json",
    "decode_msgpack",
    "get_codec",
    "register_codec",
    "serializable",
    "uuid_serializer",
]

T = TypeVar("T")

#: The JSON object key that marks a value encoded by a registered serializer.
JSON_TYPE_KEY = "__type__"
#: The first msgpack extension type code handed out to registered serializers.
MSGPACK_EXT_BASE = 16
#: How deeply a decoded value may nest (arrays, maps/objects and extension values), unless a
#: codec is made with another ``max_depth``. It is msgpack's own limit: msgpack decodes without
#: recursion and stops there by itself, so the default costs nothing. Python's JSON parser
#: recurses, and stops earlier, at the interpreter's recursion limit (1000 by default).
DEFAULT_MAX_DEPTH = 1024
#: How many msgpack extension values (registered serializers) may nest inside one another.
#: msgpack decodes each level on a fresh C stack frame of about 40 KiB, so 200 levels (714
#: bytes) overflow an 8 MiB stack and crash the process; 16 levels need about 0.7 MiB (a
#: thread's stack is 8 MiB on Linux unless a program asks for less).
MAX_EXT_DEPTH = 16

_MSGPACK_STACK = 1024  # msgpack's own nesting limit (StackError beyond it)
_CONTAINERS = frozenset((list, dict, tuple))
_is_container = _CONTAINERS.__contains__
_is_sequence = frozenset((list, tuple)).__contains__
_is_dict = frozenset((dict,)).__contains__
# msgpack type bytes that open a container or an extension value: fixmap 0x80-0x8f, fixarray
# 0x90-0x9f, ext 8/16/32 0xc7-0xc9, fixext 0xd4-0xd8, array/map 16/32 0xdc-0xdf. A value cannot
# nest deeper than the number of such bytes in its encoding (payload bytes may count too, so
# this is an upper bound).
_MSGPACK_OPENERS = bytes([*range(0x80, 0xA0), 0xC7, 0xC8, 0xC9, *range(0xD4, 0xD9),
                          *range(0xDC, 0xE0)])


def _too_deep(depth: int, limit: int, codec: str) -> CodecError:
    return CodecError(f"value nested deeper than max_depth={limit} (at least {depth} levels)",
                      codec=codec)


def _unpack_error(exc: Exception, limit: int, codec: str) -> CodecError:
    if isinstance(exc, msgpack.StackError):  # over msgpack's own limit of 1024 levels
        return _too_deep(_MSGPACK_STACK + 1, limit, codec)
    return CodecError(f"invalid data ({_describe(exc)})", codec=codec)


def _json_error(exc: Exception, limit: int) -> CodecError:
    if isinstance(exc, RecursionError):  # the parser reached the interpreter's limit
        return CodecError(f"value nested deeper than the interpreter's recursion limit allows "
                          f"(max_depth={limit})", codec="json")
    return CodecError(f"invalid data ({_describe(exc)})", codec="json")


def _msgpack_needs_check(data: Any, limit: int) -> bytes | None:
    """*data* as bytes if its depth must be measured against *limit*, else None.

    msgpack enforces its own limit; below it, the count of container and extension type bytes
    bounds the depth from above, so only messages with more of them than *limit* need a look.
    """
    if limit >= _MSGPACK_STACK or len(data) <= limit:
        return None
    raw = data if type(data) is bytes else bytes(data)
    if len(raw) - len(raw.translate(None, _MSGPACK_OPENERS)) <= limit:
        return None
    return raw


def _json_needs_check(text: str, limit: int) -> bool:
    """Whether the parsed *text* must be measured against *limit* (see _msgpack_needs_check):
    the parser itself stops at the interpreter's recursion limit."""
    return (len(text) > limit and limit < sys.getrecursionlimit()
            and text.count("[") + text.count("{") > limit)


def _container_depth_exceeds(value: Any, limit: int) -> int:
    """The first depth beyond *limit* that *value*'s lists, tuples and dicts reach, or 0.

    Iterative (no recursion, whatever the depth), one level at a time, with the children of a
    level gathered and filtered at C speed. Dict keys are not looked into (decoders never make
    a container a key).
    """
    if not _is_container(type(value)):
        return 0
    level = [value]
    depth = 0
    from_iterable = itertools.chain.from_iterable
    compress = itertools.compress
    while level:
        depth += 1
        if depth > limit:
            return depth
        kinds = list(map(type, level))
        children = list(itertools.chain(
            from_iterable(compress(level, map(_is_sequence, kinds))),
            from_iterable(map(dict.values, compress(level, map(_is_dict, kinds)))),
        ))
        level = list(compress(children, map(_is_container, map(type, children))))
    return 0


def check_depth(value: Any, max_depth: int = DEFAULT_MAX_DEPTH, *, codec: str = "value") -> None:
    """Raise :class:`CodecError` if *value* (already decoded) nests deeper than *max_depth*.

    Lists, tuples and dicts count one level each. Iterative: safe for any depth.
    """
    depth = _container_depth_exceeds(value, max_depth)
    if depth:
        raise _too_deep(depth, max_depth, codec)


def decode_json(data: bytes | bytearray | memoryview | str, *,
                max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``json.loads`` with a nesting bound: :class:`CodecError` for anything invalid or nested
    deeper than *max_depth* (or than the interpreter's recursion limit allows)."""
    try:
        if isinstance(data, str):
            text = data
        else:
            raw = data if type(data) is bytes else bytes(data)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode(json.detect_encoding(raw))  # UTF-16/32, as json.loads reads
        value = json.loads(text)
    except Exception as exc:
        raise _json_error(exc, max_depth) from exc
    if _json_needs_check(text, max_depth):
        check_depth(value, max_depth, codec="json")
    return value


def decode_msgpack(data: bytes | bytearray | memoryview, *, max_depth: int = DEFAULT_MAX_DEPTH,
                   strict_map_key: bool = False) -> Any:
    """``msgpack.unpackb(data, raw=False)`` with a nesting bound: :class:`CodecError` for
    anything invalid or nested deeper than *max_depth*. Extension values stay
    :class:`msgpack.ExtType` (use a :class:`MsgPack` codec for registered types)."""
    try:
        value = unpackb(data, raw=False, strict_map_key=strict_map_key)
    except Exception as exc:
        raise _unpack_error(exc, max_depth, "msgpack") from exc
    if _msgpack_needs_check(data, max_depth) is not None:
        check_depth(value, max_depth, codec="msgpack")
    return value


@runtime_checkable
class Codec(Protocol):
    """What trionet needs from a codec."""

    #: The codec's registry name, e.g. ``"json"``.
    name: str

    def encode(self, value: Any) -> bytes:
        """Return the bytes for *value*; raise :class:`CodecError` if it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the value *data* encodes; raise :class:`CodecError` for anything invalid."""
        ...


class _Serializer:
    __slots__ = ("code", "deserialize", "serialize", "type", "type_name")

    def __init__(
        self,
        type_: type[Any],
        serialize: Callable[[Any], Any],
        deserialize: Callable[[Any], Any],
        code: int,
    ) -> None:
        self.type = type_
        self.type_name = f"{type_.__module__}.{type_.__qualname__}"
        self.serialize = serialize
        self.deserialize = deserialize
        self.code = code


class SerializingCodec:
    """Base class of trionet's codecs: a serializer registry shared by JSON and MsgPack.

    Subclasses implement :meth:`encode` and :meth:`decode`; this class only keeps the registry.
    """

    name = "abstract"

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if max_depth < 1:
            raise ValueError("max_depth must be at least 1")
        #: The deepest nesting :meth:`decode` accepts (see the module's documentation).
        self.max_depth = max_depth
        self._by_type: dict[type[Any], _Serializer] = {}
        self._by_name: dict[str, _Serializer] = {}
        self._by_code: dict[int, _Serializer] = {}

    def add_serializer(
        self,
        type_: type[T],
        serialize: Callable[[T], Any],
        deserialize: Callable[[Any], T],
    ) -> None:
        """Teach the codec to encode instances of *type_*.

        Args:
            type_: the exact class to handle (subclasses are not matched). ``object`` is the
                fallback for every class without a serializer of its own (as in aiomas).
            serialize: turns an instance into a value the codec already knows.
            deserialize: turns that value back into an instance.

        Raises:
            ValueError: if *type_* already has a serializer.
        """
        if type_ in self._by_type:
            raise ValueError(f"a serializer for {type_.__qualname__} is already registered")
        ser = _Serializer(type_, serialize, deserialize, MSGPACK_EXT_BASE + len(self._by_type))
        if ser.code > 127:
            raise ValueError("too many serializers: msgpack has room for 112")
        self._by_type[type_] = ser
        self._by_name[ser.type_name] = ser
        self._by_code[ser.code] = ser
        self._serializers_changed()

    def _serializers_changed(self) -> None:
        """Hook for subclasses that cache encoder objects."""

    def _fail_encode(self, value: object) -> CodecError:
        return CodecError(
            f"cannot encode an object of type {type(value).__qualname__}; "
            "register it with add_serializer()",
            codec=self.name,
            fault="local",
        )

    def encode(self, value: Any) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} codec, {len(self._by_type)} serializer(s)>"


class JSON(SerializingCodec):
    """UTF-8 JSON with compact separators (aiomas 2.x's default codec).

    Registered types are written as ``{"__type__": ["module.QualName", serialized]}``. JSON has no
    bytes type: register a serializer (e.g. base64) if you need one, or use :class:`MsgPack`.
    """

    name = "json"

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        super().__init__(max_depth=max_depth)
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=self._default
        )
        self._decoder = json.JSONDecoder()
        self._hooked_decoder = json.JSONDecoder(object_hook=self._object_hook)
        # The json module's C accelerators, made once: JSONEncoder.encode builds its C encoder
        # anew on every call, and json.loads sniffs the encoding of bytes, which together cost
        # more than the encoding itself for small messages. No circular-reference markers (a
        # failed encode could leave stale ones behind): a cycle ends in RecursionError.
        self._c_encode: Callable[[Any, int], Any] | None = None
        make_encoder = getattr(json.encoder, "c_make_encoder", None)
        if make_encoder is not None:
            with contextlib.suppress(TypeError):  # another Python's signature: use the default
                self._c_encode = make_encoder(
                    None, self._default, json.encoder.encode_basestring, None, ":", ",",
                    False, False, False,
                )

    def _default(self, value: Any) -> Any:
        ser = self._by_type.get(type(value)) or self._by_type.get(object)
        if ser is None:
            raise self._fail_encode(value)
        return {JSON_TYPE_KEY: [ser.type_name, ser.serialize(value)]}

    def _object_hook(self, obj: dict[str, Any]) -> Any:
        if len(obj) == 1 and JSON_TYPE_KEY in obj:
            tagged = obj[JSON_TYPE_KEY]
            if isinstance(tagged, list) and len(tagged) == 2 and isinstance(tagged[0], str):
                ser = self._by_name.get(tagged[0])
                if ser is not None:
                    return ser.deserialize(tagged[1])
        return obj

    def encode(self, value: Any) -> bytes:
        try:
            c_encode = self._c_encode
            if c_encode is not None:
                return "".join(c_encode(value, 0)).encode("utf-8")
            return self._encoder.encode(value).encode("utf-8")
        except CodecError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise CodecError(f"cannot encode value: {exc}", codec=self.name, fault="local") from exc

    def decode(self, data: bytes) -> Any:
        decoder = self._hooked_decoder if self._by_type else self._decoder
        try:
            try:
                text = data.decode("utf-8") if type(data) is bytes else bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raw = bytes(data)
                text = raw.decode(json.detect_encoding(raw))  # UTF-16/32, as json.loads reads
            try:
                value, end = decoder.scan_once(text, 0)  # type: ignore[attr-defined]
            except StopIteration:
                value = decoder.decode(text)  # leading whitespace, or the error message
            else:
                if end != len(text):
                    value = decoder.decode(text)  # trailing whitespace, or "Extra data"
        except CodecError:
            raise
        except Exception as exc:
            raise _json_error(exc, self.max_depth) from exc
        if len(text) > self.max_depth and _json_needs_check(text, self.max_depth):
            check_depth(value, self.max_depth, codec=self.name)
        return value


class MsgPack(SerializingCodec):
    """MessagePack: ``bytes`` as bin, ``str`` as UTF-8 str, tuples become lists.

    Registered types become msgpack extension types (codes from 16 up, in registration order),
    whose data is the msgpack encoding of the serialized value, so both ends must register the
    same serializers in the same order.
    """

    name = "msgpack"

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        super().__init__(max_depth=max_depth)
        self._ext_depth = 0
        # ``default`` is only consulted for types msgpack does not know: no cost otherwise.
        self._packer = msgpack.Packer(use_bin_type=True, default=self._default)

    def _default(self, value: Any) -> Any:
        ser = self._by_type.get(type(value)) or self._by_type.get(object)
        if ser is None:
            raise self._fail_encode(value)
        # Not self.encode: the shared packer is in the middle of packing the outer value.
        data = msgpack.packb(ser.serialize(value), use_bin_type=True, default=self._default)
        return msgpack.ExtType(ser.code, data)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        ser = self._by_code.get(code)
        if ser is None:
            raise CodecError(f"unknown extension type {code}", codec=self.name)
        # msgpack calls this hook from inside its C decoder, and decoding the extension's data
        # starts another one on top: each level costs C stack, so the nesting is counted.
        if self._ext_depth >= MAX_EXT_DEPTH:
            raise CodecError(f"extension values nested more than {MAX_EXT_DEPTH} deep",
                             codec=self.name)
        self._ext_depth += 1
        try:
            value = unpackb(data, raw=False, strict_map_key=False, ext_hook=self._ext_hook)
        finally:
            self._ext_depth -= 1
        return ser.deserialize(value)

    def _check_depth_with_extensions(self, data: bytes, limit: int) -> None:
        """Measure the nesting of *data*, counting into registered extension values, without
        nesting msgpack's C decoder: each extension's data is decoded after the level above."""
        try:
            level = [unpackb(data, raw=False, strict_map_key=False)]
        except Exception as exc:
            raise _unpack_error(exc, limit, self.name) from exc
        depth = 0
        nested = _CONTAINERS | {msgpack.ExtType}
        is_nested = nested.__contains__
        while level:
            depth += 1
            if depth > limit:
                raise _too_deep(depth, limit, self.name)
            below: list[Any] = []
            for item in level:
                kind = type(item)
                if kind is msgpack.ExtType:
                    if item.code not in self._by_code:
                        raise CodecError(f"unknown extension type {item.code}", codec=self.name)
                    try:
                        children = [unpackb(item.data, raw=False, strict_map_key=False)]
                    except Exception as exc:
                        raise _unpack_error(exc, limit, self.name) from exc
                elif kind is dict:
                    children = [*item.keys(), *item.values()]
                elif kind in _CONTAINERS:
                    children = item
                else:
                    continue
                below.extend(itertools.compress(children, map(is_nested, map(type, children))))
            level = below

    def encode(self, value: Any) -> bytes:
        try:
            return self._packer.pack(value)  # type: ignore[no-any-return]
        except CodecError:
            self._packer.reset()  # a failed pack may leave partial output in the buffer
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            self._packer.reset()
            raise CodecError(f"cannot encode value: {exc}", codec=self.name, fault="local") from exc

    def decode(self, data: bytes) -> Any:
        raw = None
        if self.max_depth < _MSGPACK_STACK and not (  # (else msgpack's own limit bounds it)
            type(data) is bytes and len(data) <= self.max_depth  # (too short to nest deeper)
        ):
            try:
                raw = _msgpack_needs_check(data, self.max_depth)
            except Exception as exc:  # not a bytes-like object
                raise CodecError(f"invalid data ({_describe(exc)})", codec=self.name) from exc
        if raw is not None and self._by_code:
            self._check_depth_with_extensions(raw, self.max_depth)
            raw = None
        try:
            if self._by_code:
                value = unpackb(data, raw=False, strict_map_key=False, ext_hook=self._ext_hook)
            else:
                value = unpackb(data, raw=False, strict_map_key=False)
        except CodecError:
            raise
        except Exception as exc:
            raise _unpack_error(exc, self.max_depth, self.name) from exc
        if raw is not None:
            check_depth(value, self.max_depth, codec=self.name)
        return value


class ZiProto(MsgPack):
    """AsyncAProto's content-encoding 1: byte-identical to the ``ziproto`` 1.0 package.

    The package writes the msgpack format (``bin`` for bytes, ``str`` for text, the smallest
    integer and length forms, float64), so this is :class:`MsgPack` under another name.
    """

    name = "ziproto"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_REGISTRY: dict[str, Callable[[], Codec]] = {
    "json": JSON,
    "msgpack": MsgPack,
    "ziproto": ZiProto,
}


def register_codec(name: str, factory: Callable[[], Codec], *, replace: bool = False) -> None:
    """Make *factory* available as ``get_codec(name)``.

    Raises:
        ValueError: if *name* is taken and *replace* is false.
    """
    key = name.lower()
    if key in _REGISTRY and not replace:
        raise ValueError(f"codec {name!r} is already registered")
    _REGISTRY[key] = factory


def get_codec(codec: str | Codec | type[Codec]) -> Codec:
    """Return a codec: a new one for a registered name (case-insensitive) or a codec class
    (aiomas users pass classes), or *codec* itself if it is already an instance.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if isinstance(codec, type):
        return codec()
    if not isinstance(codec, str):
        return codec
    try:
        factory = _REGISTRY[codec.lower()]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown codec {codec!r}; known codecs: {known}") from None
    return factory()


def available_codecs() -> list[str]:
    """The registered codec names, sorted."""
    return sorted(_REGISTRY)


def serializable(cls: type[T]) -> type[T]:
    """Class decorator: mark *cls* for :func:`add_serializers_for`-style registration.

    The class gets a ``__serializer__`` classmethod returning ``(cls, serialize, deserialize)``
    where ``serialize`` is ``vars(obj)`` and ``deserialize`` is ``cls(**data)``, so the class's
    constructor must accept its attributes as keyword arguments. Register it with
    ``codec.add_serializer(*Point.__serializer__())``.
    """

    def _serializer(
        klass: type[T],
    ) -> tuple[type[T], Callable[[T], Any], Callable[[Any], T]]:
        def serialize(obj: T) -> dict[str, Any]:
            return dict(vars(obj))

        def deserialize(data: Any) -> T:
            return klass(**data)

        return klass, serialize, deserialize

    cls.__serializer__ = classmethod(_serializer)  # type: ignore[attr-defined]
    return cls


#: The longest text the standard serializers accept from a peer (an ISO timestamp with
#: microseconds and an offset is 32 characters; a decimal is bounded the same way).
_MAX_TEXT = 64

SerializerFactory = Callable[[], tuple[type[Any], Callable[[Any], Any], Callable[[Any], Any]]]


def _text(data: Any, what: str) -> str:
    if not isinstance(data, str) or len(data) > _MAX_TEXT:
        raise ValueError(f"a {what} is sent as a string of at most {_MAX_TEXT} characters")
    return data


def datetime_serializer() -> tuple[type[_dt.datetime], Callable[[_dt.datetime], str],
                                   Callable[[Any], _dt.datetime]]:
    """:class:`datetime.datetime` as ISO 8601 text (time zone kept; naive stays naive)."""
    return (_dt.datetime, _dt.datetime.isoformat,
            lambda data: _dt.datetime.fromisoformat(_text(data, "datetime")))


def date_serializer() -> tuple[type[_dt.date], Callable[[_dt.date], str],
                               Callable[[Any], _dt.date]]:
    """:class:`datetime.date` as ISO 8601 text (``"2026-12-07"``)."""
    return _dt.date, _dt.date.isoformat, lambda data: _dt.date.fromisoformat(_text(data, "date"))


def uuid_serializer() -> tuple[type[uuid.UUID], Callable[[uuid.UUID], str],
                               Callable[[Any], uuid.UUID]]:
    """:class:`uuid.UUID` as its canonical 36-character text."""
    return uuid.UUID, str, lambda data: uuid.UUID(_text(data, "UUID"))


def decimal_serializer() -> tuple[type[decimal.Decimal], Callable[[decimal.Decimal], str],
                                  Callable[[Any], decimal.Decimal]]:
    """:class:`decimal.Decimal` as text (exact, unlike a float; at most 64 characters)."""
    return decimal.Decimal, str, lambda data: decimal.Decimal(_text(data, "decimal"))


#: The four standard serializer factories, for ``extra_serializers=`` or a loop over
#: ``add_serializer``. Both ends must register the same ones in the same order (MsgPack
#: numbers its extension types in registration order).
STANDARD_SERIALIZERS: tuple[SerializerFactory, ...] = (
    datetime_serializer, date_serializer, uuid_serializer, decimal_serializer,
)
