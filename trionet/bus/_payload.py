"""Payloads of typed objects: encoding them for publishing, decoding them for handlers.

msgspec does the work (the ``bus`` extra). It is imported the first time a typed payload is
encoded or a typed handler registered, so ``import trionet.bus`` and handlers of raw ``bytes``
or ``str`` work without it. JSON is the default; a message whose ``content_type`` is
``application/msgpack`` (or ``application/x-msgpack``, ``application/vnd.msgpack``) is
MessagePack.

pydantic models are supported when the program uses pydantic (this module never imports it:
a class is a pydantic model only if ``pydantic`` is already in :data:`sys.modules`); msgspec
parses their payload, pydantic validates it, so nesting is bounded the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import ConfigurationError
from ._errors import InvalidPayload
from ._message import BusMessage

__all__ = [
    "JSON_CONTENT_TYPE",
    "MSGPACK_CONTENT_TYPE",
    "decode_payload",
    "encode_payload",
    "payload_decoder",
    "to_message",
]

#: The content type of payloads encoded as JSON (the default).
JSON_CONTENT_TYPE: Final = "application/json"
#: The content type that asks for MessagePack.
MSGPACK_CONTENT_TYPE: Final = "application/msgpack"
_MSGPACK_TYPES: Final = frozenset(
    {MSGPACK_CONTENT_TYPE, "application/x-msgpack", "application/vnd.msgpack"}
)

PayloadDecoder = Callable[[BusMessage], Any]


def _msgspec(purpose: str) -> Any:
    try:
        import msgspec
    except ImportError:  # pragma: no cover - msgspec is installed where the tests run
        raise ConfigurationError(
            f"{purpose} needs msgspec: install the bus extra (pip install 'trionet[bus]')"
        ) from None
    return msgspec


def is_msgpack(content_type: str | None) -> bool:
    """Whether *content_type* names MessagePack (parameters after ``;`` ignored)."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() in _MSGPACK_TYPES


def is_pydantic_model(annotation: object) -> bool:
    """Whether *annotation* is a pydantic model class (without importing pydantic)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(annotation, type):
        return False
    base = getattr(pydantic, "BaseModel", None)
    return isinstance(base, type) and issubclass(annotation, base)


def _enc_hook(value: Any) -> Any:
    if is_pydantic_model(type(value)):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode a {type(value).__name__} as a payload")


_encoders: dict[str, Any] = {}


def _encoder(kind: str) -> Any:
    encoder = _encoders.get(kind)
    if encoder is None:
        msgspec = _msgspec("publishing typed objects")
        module = msgspec.msgpack if kind == "msgpack" else msgspec.json
        encoder = _encoders[kind] = module.Encoder(enc_hook=_enc_hook)
    return encoder


def encode_payload(value: Any, content_type: str | None = None) -> tuple[bytes, str | None]:
    """*value* as payload bytes, and the content type to send them with.

    ``bytes`` (and ``bytearray``, ``memoryview``) go as they are and ``str`` as UTF-8, with
    *content_type* unchanged. Anything else (a dataclass, a msgspec ``Struct``, a dict, a
    pydantic model, ...) is encoded by msgspec: as MessagePack when *content_type* says so,
    else as JSON (content type ``application/json`` unless another is given).

    Raises:
        TypeError: if msgspec cannot encode *value*.
        ConfigurationError: if msgspec is not installed.
    """
    if isinstance(value, bytes):
        return value, content_type
    if isinstance(value, bytearray | memoryview):
        return bytes(value), content_type
    if isinstance(value, str):
        return value.encode("utf-8"), content_type
    if is_msgpack(content_type):
        return _encoder("msgpack").encode(value), content_type
    return _encoder("json").encode(value), content_type or JSON_CONTENT_TYPE


def to_message(
    value: Any,
    topic: str,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    correlation_id: str | None = None,
) -> BusMessage:
    """A :class:`BusMessage` to *topic* carrying *value* (see :func:`encode_payload`)."""
    payload, content_type = encode_payload(value, content_type)
    return BusMessage(payload, topic, content_type=content_type, headers=headers,
                      correlation_id=correlation_id)


def as_message(
    value: Any,
    topic: str | None,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    correlation_id: str | None = None,
) -> BusMessage:
    """What ``publish(value, topic, ...)`` publishes: a :class:`BusMessage` as it is (a copy
    to *topic* when one is given), anything else as :func:`to_message` makes it.

    Raises:
        TypeError: for an object that is not a message and no *topic*.
    """
    if isinstance(value, BusMessage):
        return value if topic is None else value.copy(topic=topic)
    if topic is None:
        raise TypeError(f"publish() takes a BusMessage, or a topic with a {type(value).__name__}")
    return to_message(value, topic, content_type=content_type, headers=headers,
                      correlation_id=correlation_id)


def _invalid(message: BusMessage, annotation: object, exc: BaseException) -> InvalidPayload:
    name = getattr(annotation, "__name__", None) or repr(annotation)
    if isinstance(exc, RecursionError):
        reason = "nested too deeply"
    else:
        reason = str(exc) or type(exc).__name__
    return InvalidPayload(f"invalid payload for {name}: {reason}", topic=message.topic,
                          message_id=message.message_id,
                          correlation_id=message.correlation_id)


def payload_decoder(annotation: Any) -> PayloadDecoder:
    """A function reading a message's payload as *annotation* says, built once.

    ``bytes``: the payload as it is; ``str``: the payload as UTF-8; anything else msgspec can
    decode (dataclasses, ``Struct``, ``TypedDict``, ``dict``, ``list``, scalars, unions of
    them) or a pydantic model: JSON, or MessagePack when the message's ``content_type`` says
    so, validated. The functions raise :class:`InvalidPayload` for payloads that do not fit
    (nesting deeper than Python's recursion limit included).

    Raises:
        ConfigurationError: if msgspec is missing or cannot decode into *annotation*.
    """
    if annotation is bytes:
        return _raw_payload
    if annotation is str:
        def decode_text(message: BusMessage) -> str:
            try:
                return message.payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _invalid(message, str, exc) from None
        return decode_text
    msgspec = _msgspec(f"a handler of {getattr(annotation, '__name__', annotation)!r} payloads")
    pydantic_model = is_pydantic_model(annotation)
    target = Any if pydantic_model else annotation
    try:
        json_decoder = msgspec.json.Decoder(target)
        msgpack_decoder = msgspec.msgpack.Decoder(target)
    except Exception as exc:  # msgspec raises TypeError, or NameError for unresolved hints
        raise ConfigurationError(
            f"cannot decode payloads into {annotation!r}: {type(exc).__name__}: {exc}"
        ) from None
    json_decode = json_decoder.decode
    msgpack_decode = msgpack_decoder.decode
    # ValueError covers pydantic's ValidationError; msgspec's errors are ValueErrors too.
    errors = (ValueError, TypeError, RecursionError)
    if pydantic_model:
        validate = annotation.model_validate

        def decode_model(message: BusMessage) -> Any:
            content_type = message.content_type
            decode = msgpack_decode if content_type and is_msgpack(content_type) else json_decode
            try:
                return validate(decode(message.payload))
            except errors as exc:
                raise _invalid(message, annotation, exc) from None
        return decode_model

    def decode(message: BusMessage) -> Any:
        content_type = message.content_type
        try:
            if content_type is not None and is_msgpack(content_type):
                return msgpack_decode(message.payload)
            return json_decode(message.payload)
        except errors as exc:
            raise _invalid(message, annotation, exc) from None
    return decode


def _raw_payload(message: BusMessage) -> bytes:
    return message.payload


def decode_payload(message: BusMessage, annotation: Any) -> Any:
    """Read *message*'s payload as *annotation* (for replies and messages received by hand).

    Builds a decoder each call; handlers get theirs built once, at registration.

    Raises:
        InvalidPayload: if the payload does not fit *annotation*.
        ConfigurationError: if msgspec is missing or cannot decode into *annotation*.
    """
    return payload_decoder(annotation)(message)
