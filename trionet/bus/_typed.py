"""Typed consumers: which argument gets what, worked out once at registration.

A consumer's parameters are read when it is registered:

* ``socket``, ``state`` and resource names get what they always got (whatever their
  annotation), and ``message`` unannotated (or annotated :class:`BusMessage`, ``Any`` or
  ``object``) gets the raw message: spa_dat's handlers run as before;
* a parameter annotated :class:`BusMessage` gets the raw message, :class:`BusSocket` the
  socket, whatever its name;
* ``Annotated[T, marker]`` with a marker from this module (:func:`Header`, or the aliases
  :data:`Headers`, :data:`CorrelationId`, :data:`MessageId`, :data:`State`) gets that value;
* one other annotated parameter gets the payload, decoded into its annotation
  (:func:`~trionet.bus._payload.payload_decoder`).

A consumer that uses nothing but the spa_dat names has no binding and is called as before.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from ..errors import ConfigurationError
from ..observability import CORRELATION_HEADER
from ._errors import InvalidPayload
from ._message import BusMessage
from ._payload import encode_payload, payload_decoder
from ._socket import BusSocket

__all__ = [
    "CorrelationId",
    "Header",
    "Headers",
    "Inject",
    "MessageId",
    "State",
    "bind_consumer",
]

_MISSING: Final = object()


class Inject:
    """A marker for ``Annotated[T, marker]``: what the bus passes to that parameter.

    Use :func:`Header` and the ready-made aliases rather than making these.

    Attributes:
        source: ``"header"``, ``"headers"``, ``"correlation_id"``, ``"message_id"``,
            ``"message"``, ``"socket"`` or ``"state"``.
        name: the header's name (for ``"header"``).
        default: the value when the header is missing.
    """

    __slots__ = ("default", "name", "source")

    _SOURCES: Final = frozenset({"header", "headers", "correlation_id", "message_id",
                                 "message", "socket", "state"})

    def __init__(self, source: str, name: str | None = None, default: Any = _MISSING) -> None:
        if source not in self._SOURCES:
            raise ConfigurationError(f"unknown injection source {source!r}")
        self.source = source
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        if self.source == "header":
            return f"Header({self.name!r})"
        return f"Inject({self.source!r})"


def Header(name: str, *, default: Any = _MISSING) -> Inject:
    """The marker of one header: ``tenant: Annotated[str, Header("x-tenant")]``.

    A message without the header is invalid (:class:`InvalidPayload`: the handler is not
    called) unless *default* is given or the parameter has a default value.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError("Header() needs a header name")
    return Inject("header", name, default)


#: The message's headers (a ``dict[str, str]``).
Headers = Annotated[dict[str, str], Inject("headers")]
#: The message's correlation id (its ``x-correlation-id`` header, else its
#: ``correlation_id``; ``None`` if it has neither), the one the bus logs.
CorrelationId = Annotated[str | None, Inject("correlation_id")]
#: The message's id (``None`` if it has none).
MessageId = Annotated[str | None, Inject("message_id")]
#: The application's ``state`` object, whatever the parameter's name.
State = Annotated[Any, Inject("state")]

Getter = Callable[[BusMessage], Any]


def _same(message: BusMessage) -> BusMessage:
    return message


def _headers(message: BusMessage) -> dict[str, str]:
    return message.headers


def _correlation_id(message: BusMessage) -> str | None:
    return message.headers.get(CORRELATION_HEADER) or message.correlation_id


def _message_id(message: BusMessage) -> str | None:
    return message.message_id


def _header_getter(name: str, default: Any) -> Getter:
    def header(message: BusMessage) -> Any:
        value = message.headers.get(name, default)
        if value is _MISSING:
            raise InvalidPayload(f"the message has no {name!r} header", topic=message.topic,
                                 message_id=message.message_id,
                                 correlation_id=message.correlation_id)
        return value
    return header


_GETTERS: Final[dict[str, Getter]] = {
    "message": _same,
    "headers": _headers,
    "correlation_id": _correlation_id,
    "message_id": _message_id,
}


@dataclass(frozen=True, slots=True)
class ConsumerBinding:
    """How the bus calls one typed consumer (built by :func:`bind_consumer`).

    Attributes:
        payload_type: the payload parameter's annotation, ``None`` if there is none.
        payload_parameter: that parameter's name.
        statics: ``(parameter, source)``: per run, from the socket, state and resources.
        getters: ``(parameter, getter)``: per message.
    """

    payload_type: Any
    payload_parameter: str | None
    statics: tuple[tuple[str, str], ...]
    getters: tuple[tuple[str, Getter], ...]

    @property
    def provided(self) -> frozenset[str]:
        """The parameters the binding fills."""
        return frozenset(name for name, _ in self.statics + self.getters)

    def run_kwargs(self, available: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments that stay the same for a whole run of the application."""
        return {parameter: available[source] for parameter, source in self.statics}

    def invoker(self, callback: Callable[..., Awaitable[Any]]
                ) -> Callable[[BusMessage, dict[str, Any]], Awaitable[Any]]:
        """``invoke(message, run_kwargs)``: decode, inject, call *callback*."""
        getters = self.getters
        if len(getters) == 1:
            ((only, get),) = getters

            def invoke_one(message: BusMessage, kwargs: dict[str, Any]) -> Awaitable[Any]:
                return callback(**kwargs, **{only: get(message)})
            return invoke_one

        def invoke(message: BusMessage, kwargs: dict[str, Any]) -> Awaitable[Any]:
            arguments = dict(kwargs)
            for parameter, getter in getters:
                arguments[parameter] = getter(message)
            return callback(**arguments)
        return invoke


class _Unresolved:
    """An annotation that could not be evaluated (a name defined where the bus cannot see)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _hints(callback: Callable[..., Any]) -> dict[str, Any]:
    function = callback if inspect.isroutine(callback) else getattr(callback, "__call__", callback)  # noqa: B004
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        pass
    raw = getattr(function, "__annotations__", {}) or {}
    module_globals = getattr(function, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, module_globals)
            except Exception:
                annotation = _Unresolved(annotation)
        hints[name] = annotation
    return hints


def return_annotation(callback: Callable[..., Any]) -> Any:
    """The callback's return annotation (``None`` if it has none or it does not resolve)."""
    annotation = _hints(callback).get("return")
    if annotation is None or isinstance(annotation, _Unresolved) or annotation is type(None):
        return None
    return _strip(annotation)[0]


def _strip(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(annotation) is Annotated:
        return annotation.__origin__, annotation.__metadata__
    return annotation, ()


def _is_subclass(annotation: Any, cls: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, cls)


def bind_consumer(callback: Callable[..., Any], static: frozenset[str]
                  ) -> ConsumerBinding | None:
    """Read *callback*'s parameters; ``None`` if it uses only spa_dat's names.

    Args:
        callback: the consumer.
        static: the names the bus passes per run (``socket``, ``state``, resources).

    Raises:
        ConfigurationError: for two payload parameters, a payload type msgspec cannot
            decode, msgspec missing, or a required parameter whose annotation cannot be
            resolved.
    """
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None
    hints = _hints(callback)
    statics: list[tuple[str, str]] = []
    getters: list[tuple[str, Getter]] = []
    payload: tuple[str, Any] | None = None
    plain = True  # only spa_dat's names, by name
    for parameter in parameters:
        if parameter.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                  inspect.Parameter.KEYWORD_ONLY):
            continue
        name = parameter.name
        annotation, metadata = _strip(hints.get(name, inspect.Parameter.empty))
        marker = next((m for m in metadata if isinstance(m, Inject)), None)
        if marker is not None:
            plain = False
            if marker.source in ("socket", "state"):
                statics.append((name, marker.source))
            elif marker.source == "header":
                assert marker.name is not None
                default = marker.default
                if default is _MISSING and parameter.default is not inspect.Parameter.empty:
                    default = parameter.default
                getters.append((name, _header_getter(marker.name, default)))
            else:
                getters.append((name, _GETTERS[marker.source]))
            continue
        if name in static:
            statics.append((name, name))
            continue
        if _is_subclass(annotation, BusMessage) or (
            name == "message" and (annotation is inspect.Parameter.empty or annotation is Any
                                   or annotation is object
                                   or isinstance(annotation, _Unresolved))
        ):
            if name != "message":
                plain = False
            getters.append((name, _same))
            continue
        if _is_subclass(annotation, BusSocket):
            plain = False
            statics.append((name, "socket"))
            continue
        if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
            # Not ours (``Any`` says nothing about a payload, and is what a misspelt resource
            # name is often annotated with): the registration reports it if it is required.
            continue
        if isinstance(annotation, _Unresolved):
            if parameter.default is not inspect.Parameter.empty:
                continue
            raise ConfigurationError(
                f"{getattr(callback, '__name__', 'callback')}(): cannot resolve the "
                f"annotation {annotation.text!r} of {name!r} (define the type at module level)"
            )
        if payload is not None:
            raise ConfigurationError(
                f"{getattr(callback, '__name__', 'callback')}(): {payload[0]!r} and {name!r} "
                "both look like the payload; a consumer takes one payload parameter (use "
                "Annotated[..., Header(...)] and the other markers for the rest)"
            )
        plain = False
        payload = (name, annotation)
        getters.append((name, payload_decoder(annotation)))
    if plain:
        return None
    return ConsumerBinding(
        payload_type=None if payload is None else payload[1],
        payload_parameter=None if payload is None else payload[0],
        statics=tuple(statics),
        getters=tuple(getters),
    )


async def publish_result(
    socket: BusSocket,
    request: BusMessage,
    result: Any,
    topics: tuple[str, ...],
    content_type: str | None,
) -> None:
    """Publish a consumer's return value to its publisher topics, and as the reply when
    *request* names a ``response_topic``. ``None`` publishes nothing."""
    if result is None or not (topics or request.response_topic):
        return
    headers: dict[str, str] | None = None
    if isinstance(result, BusMessage):
        payload, kind, headers = result.payload, result.content_type, result.headers
    else:
        payload, kind = encode_payload(result, content_type)
    for topic in topics:
        await socket.publish(BusMessage(payload, topic, content_type=kind, headers=headers,
                                        correlation_id=request.correlation_id))
    if request.response_topic:
        await socket.publish(request.make_reply(payload, content_type=kind, headers=headers))
