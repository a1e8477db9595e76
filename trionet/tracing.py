"""Distributed tracing with OpenTelemetry: the correlation id becomes a W3C trace context.

Where OpenTelemetry is present and a ``TracerProvider`` is configured, trionet's components
take part in traces:

* an HTTP request to a :class:`~trionet.asgi.ASGIApplication` runs in a ``SERVER`` span whose
  parent is the request's ``traceparent`` header (a new trace without one);
* a message published on the bus (:meth:`BusSocket.publish <trionet.bus.BusSocket.publish>`,
  requests and replies included) carries the current span's context in its ``traceparent``
  and ``tracestate`` headers (W3C Trace Context), next to the ``x-correlation-id`` header;
* a bus handler runs in a ``CONSUMER`` span whose parent is the message's ``traceparent``,
  with the attributes ``messaging.system`` (``mqtt``, ``kafka``, ``memory``),
  ``messaging.destination`` (the topic), ``messaging.message.id`` and the correlation id.

MQTT and Kafka clients make ``PRODUCER`` and ``CONSUMER`` spans and carry the context in MQTT
5 user properties and Kafka record headers; the Channel, RPC and AsyncAProto make ``CLIENT`` and
``SERVER`` spans, and the mail clients ``CLIENT`` spans, with no context on their wires (see
the observability page). So an HTTP request that makes a bus request answered by a handler is
one trace. Every span
carries the correlation id (:mod:`trionet.observability`) as ``trionet.correlation_id``; work
that has none (a request without :class:`~trionet.asgi.RequestIdMiddleware`, a message without
a correlation id) takes the trace id, as 32 hex digits, as its correlation id, so logs and
traces share one key.

Tracing is on while a provider is configured: the global one
(``opentelemetry.trace.set_tracer_provider``), or one given to :func:`install` (which wins).
trionet never imports OpenTelemetry itself to find out: when nothing else has imported
``opentelemetry.trace``, or no provider is set, each component pays one dictionary look-up per
message or request and does nothing more. Install the ``otel`` extra (``opentelemetry-api``)
and configure the SDK (``opentelemetry-sdk``) with an exporter, as OpenTelemetry's
documentation describes.

Incoming trace headers are untrusted: a ``traceparent`` that is not W3C's format (version
``00``: exactly 55 characters, lowercase hex, non-zero ids), or longer than
:data:`MAX_TRACEPARENT`, is ignored (the work starts a new trace), and a ``tracestate`` longer
than :data:`MAX_TRACESTATE` is dropped.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from . import observability as _observability

__all__ = [
    "CORRELATION_ATTRIBUTE",
    "MAX_TRACEPARENT",
    "MAX_TRACESTATE",
    "TRACEPARENT",
    "TRACESTATE",
    "AttributeValue",
    "Carrier",
    "ConsumerSpan",
    "Span",
    "carrier_of",
    "consumer_span",
    "enabled",
    "end_span",
    "ending",
    "install",
    "installed",
    "messaging_attributes",
    "name_method",
    "note_correlation_id",
    "parse_traceparent",
    "serve_request",
    "span",
    "start_span",
    "trace_headers",
    "traced_handler",
    "tracer",
    "uninstall",
]

#: The header carrying the trace context (W3C Trace Context), on HTTP requests and messages.
TRACEPARENT = "traceparent"
#: The header carrying vendors' trace state (W3C Trace Context).
TRACESTATE = "tracestate"
#: The longest ``traceparent`` considered (a version ``00`` header is exactly 55 characters;
#: later versions may append fields).
MAX_TRACEPARENT = 256
#: The longest ``tracestate`` kept (W3C asks to propagate at least 512 characters).
MAX_TRACESTATE = 512
#: The span attribute with the correlation id.
CORRELATION_ATTRIBUTE = "trionet.correlation_id"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z",
                          re.DOTALL)
# a W3C tracestate list member: a key (lowercase; "tenant@system" allowed) "=" a value of
# printable ASCII without "," and "=", not ending in a space
_TRACESTATE_MEMBER = re.compile(
    r"[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}"
    r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]\Z")
_NAME = "trionet"

_installed_tracer: Any = None
_modules_get = sys.modules.get
_global_provider: Any = None
_global_tracer: Any = None
_system_by_type: dict[type, str] = {}


class _API:
    """The parts of ``opentelemetry-api`` used per span, imported once tracing is on."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.context = context
        self.trace = trace
        self.empty = context.Context()
        self.error = trace.StatusCode.ERROR
        self.Status = trace.Status
        self.SpanKind = trace.SpanKind


_api_cache: list[_API] = []


def _api() -> _API:
    if not _api_cache:
        _api_cache.append(_API())
    return _api_cache[0]


def tracer() -> Any:
    """The OpenTelemetry ``Tracer`` trionet uses, or ``None`` while tracing is off."""
    global _global_provider, _global_tracer
    if _installed_tracer is not None:
        return _installed_tracer
    module = sys.modules.get("opentelemetry.trace")
    if module is None:
        return None
    provider = getattr(module, "_TRACER_PROVIDER", None)
    if provider is None:
        return None
    if provider is not _global_provider:
        _global_tracer = provider.get_tracer(_NAME)
        _global_provider = provider
    return _global_tracer


def enabled() -> bool:
    """True while a ``TracerProvider`` is configured (see the module's description).

    What every component checks first, per message or request: one global and one dictionary
    look-up while OpenTelemetry is not imported."""
    if _installed_tracer is not None:
        return True
    module = _modules_get("opentelemetry.trace")
    return module is not None and getattr(module, "_TRACER_PROVIDER", None) is not None


def install(tracer_provider: Any = None) -> None:
    """Trace with *tracer_provider* (default: OpenTelemetry's global one), process-wide.

    It wins over the global provider until :func:`uninstall`. Needs ``opentelemetry-api``.
    """
    global _installed_tracer
    from opentelemetry import trace

    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    _installed_tracer = provider.get_tracer(_NAME)


def uninstall() -> None:
    """Forget the provider given to :func:`install` (the global one, if set, still traces)."""
    global _installed_tracer
    _installed_tracer = None


@contextmanager
def installed(tracer_provider: Any = None) -> Iterator[None]:
    """:func:`install` *tracer_provider* for the duration of a ``with`` block (tests, scripts)."""
    global _installed_tracer
    previous = _installed_tracer
    install(tracer_provider)
    try:
        yield
    finally:
        _installed_tracer = previous


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """``(trace id, parent span id, flags)`` from a W3C ``traceparent``, or ``None`` if it is
    malformed: too long, not lowercase hex, version ``ff``, a version ``00`` header that is not
    exactly 55 characters, or an all-zero trace or span id."""
    if len(value) > MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags, 16)


def _parent(traceparent: str | None, tracestate: str | None) -> Any:
    """The OpenTelemetry context to start a span in: the remote parent, or an empty context
    (a new trace) when *traceparent* is missing or malformed."""
    api = _api()
    trace = api.trace
    parsed = parse_traceparent(traceparent) if traceparent else None
    if parsed is None:
        return api.empty
    trace_id, span_id, flags = parsed
    state = None
    if tracestate and len(tracestate) <= MAX_TRACESTATE and _valid_tracestate(tracestate):
        state = trace.TraceState.from_header([tracestate])
    parent = trace.SpanContext(trace_id, span_id, is_remote=True,
                               trace_flags=trace.TraceFlags(flags & 0xFF), trace_state=state)
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), api.empty)


def _valid_tracestate(value: str) -> bool:
    """True if *value* is a W3C ``tracestate`` list (at most 32 ``key=value`` members); what is
    not is dropped here, silently (OpenTelemetry would log a warning for each: a peer could
    fill the logs)."""
    members = [member.strip(" \t") for member in value.split(",")]
    members = [member for member in members if member]
    return len(members) <= 32 and all(_TRACESTATE_MEMBER.match(m) for m in members)


def trace_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """*headers* plus ``traceparent`` (and ``tracestate``) of the current span, or ``None`` if
    there is nothing to add (no valid current span, or *headers* has a ``traceparent``)."""
    if TRACEPARENT in headers:
        return None
    span_context = _api().trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    added = dict(headers)
    added[TRACEPARENT] = (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
                          f"{int(span_context.trace_flags):02x}")
    if span_context.trace_state:
        added[TRACESTATE] = span_context.trace_state.to_header()
    return added


def note_correlation_id(correlation_id: str) -> None:
    """Set *correlation_id* as the current span's ``trionet.correlation_id`` (what
    :class:`~trionet.asgi.RequestIdMiddleware` calls once it has picked the request id)."""
    if tracer() is None:
        return
    _api().trace.get_current_span().set_attribute(CORRELATION_ATTRIBUTE, correlation_id)


def _system(socket: object) -> str:
    kind = type(socket)
    found = _system_by_type.get(kind)
    if found is None:
        name = kind.__name__.lower()
        found = next((s for s in ("mqtt", "kafka", "memory") if s in name), "trionet")
        _system_by_type[kind] = found
    return found


#: What arrives with a message or request: its ``(traceparent, tracestate)`` (either may be
#: ``None``).
Carrier = tuple[str | None, str | None]
#: A span attribute's value.
AttributeValue = str | int | float | bool


class Span:
    """A span trionet started (by :func:`start_span`, :func:`span` or :func:`consumer_span`).

    Attributes:
        correlation_id: the correlation id the span carries (``None`` when it has none).
    """

    __slots__ = ("_span", "_token", "correlation_id")

    def __init__(self, span: Any, token: object, correlation_id: str | None) -> None:
        self._span = span
        self._token = token
        self.correlation_id = correlation_id

    @property
    def otel_span(self) -> Any:
        """The OpenTelemetry span itself (to set attributes or add events)."""
        return self._span

    def carrier(self) -> tuple[str, str | None]:
        """This span's context as W3C ``(traceparent, tracestate)`` header values (what a
        producer writes into a message)."""
        context = self._span.get_span_context()
        traceparent = (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                       f"{int(context.trace_flags):02x}")
        return traceparent, (context.trace_state.to_header() if context.trace_state else None)

    def set(self, name: str, value: AttributeValue) -> None:
        """Set the span attribute *name*."""
        self._span.set_attribute(name, value)

    def failed(self, exc: BaseException) -> None:
        """Record that the work raised *exc* (each attempt's exception is recorded), with
        ``error.type`` and an ``ERROR`` status."""
        api = _api()
        self._span.record_exception(exc)
        self._span.set_attribute("error.type", type(exc).__qualname__)
        self._span.set_status(api.Status(api.error, f"{type(exc).__name__}: {exc}"[:200]))

    def end(self) -> None:
        """Leave the span's context (if it was made current, in the task that did it) and end
        it."""
        self._leave()
        self._span.end()

    def _enter(self) -> None:
        api = _api()
        self._token = api.context.attach(api.trace.set_span_in_context(self._span))

    def _leave(self) -> None:
        if self._token is not None:
            _api().context.detach(self._token)
            self._token = None


#: The span of a bus handler (see :func:`consumer_span`): a :class:`Span`.
ConsumerSpan = Span


def _kind(kind: str) -> Any:
    return getattr(_api().SpanKind, kind.upper())


def start_span(name: str, kind: str, attributes: Mapping[str, AttributeValue], *,
               carrier: Carrier | None = None, links: Iterable[Carrier] = (),
               current: bool = False) -> Span | None:
    """Start a span of *kind* (``"client"``, ``"server"``, ``"producer"``, ``"consumer"``,
    ``"internal"``), or return ``None`` while tracing is off. End it with :meth:`Span.end`.

    Args:
        name: the span's name (for example ``"publish sensors/1"``).
        kind: the OpenTelemetry span kind, by name.
        attributes: the span's attributes (semantic-convention names).
        carrier: the trace context received with the work, ``(traceparent, tracestate)``:
            the parent of the span; missing or malformed values start a new trace. Without a
            carrier the parent is the current span.
        links: more received contexts to link to (a batch's messages); malformed ones are
            left out.
        current: make the span current (in this task) until :meth:`Span.end`.
    """
    active = tracer()
    if active is None:
        return None
    api = _api()
    parent = None if carrier is None else _parent(*carrier)
    linked = []
    for traceparent, tracestate in links:
        remote = _parent(traceparent, tracestate)
        if remote is not api.empty:
            linked.append(api.trace.Link(api.trace.get_current_span(remote).get_span_context()))
    otel_span = active.start_span(name, context=parent, kind=_kind(kind),
                                  attributes=dict(attributes), links=linked or None)
    correlation_id = _observability.current_correlation_id()
    if correlation_id is not None:
        otel_span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
    token = (api.context.attach(api.trace.set_span_in_context(otel_span))
             if current else None)
    return Span(otel_span, token, correlation_id)


class _Ending:
    """What :func:`ending` returns for a span."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        end_span(self._span, error)


_NOTHING: AbstractContextManager[None] = nullcontext()


def ending(span: Span | None) -> AbstractContextManager[Span | None]:
    """A ``with`` block at whose end *span* ends, failed if an :class:`Exception` leaves the
    block (see :func:`end_span`); nothing happens for ``None`` (tracing was off)."""
    return _NOTHING if span is None else _Ending(span)


def name_method(span: Span | None, function: object) -> None:
    """Name *span* after the RPC method *function* that serves the request and set
    ``rpc.method`` (for a server that learns the method once a handler matched); nothing for
    ``None``."""
    if span is None:
        return
    method = str(getattr(function, "__name__", None) or "handler")
    span._span.update_name(method)
    span._span.set_attribute("rpc.method", method)


def end_span(span: Span | None, error: BaseException | None, count: int | None = None) -> None:
    """End *span* of an operation that raised *error* (``None``: it succeeded; a
    :exc:`trio.Cancelled` or other non-:class:`Exception` is not a failure) on *count* messages
    (``messaging.batch.message_count``, when given). Nothing for ``None`` (tracing was off)."""
    if span is None:
        return
    if isinstance(error, Exception):
        span.failed(error)
    if count is not None:
        span.set("messaging.batch.message_count", count)
    span.end()


def traced_handler(handler: Callable[[Any], Any],
                   describe: Callable[[Any], tuple[str, dict[str, AttributeValue]]],
                   ) -> Callable[[Any], Any]:
    """*handler* (which returns a value or an awaitable) answering each request in a
    ``SERVER`` span, current while it runs; *describe* gives a request's span name and
    attributes. What a server wraps its handler with when it starts, while tracing is on."""

    def traced(content: Any) -> Any:
        name, attributes = describe(content)
        started = start_span(name, "server", attributes, current=True)
        if started is None:
            return handler(content)
        try:
            result = handler(content)
        except Exception as exc:
            end_span(started, exc)
            raise
        if not inspect.isawaitable(result):
            started.end()
            return result
        started._leave()  # the awaitable runs in a task of its own: the span goes with it
        return _finish(result, started)

    return traced


async def _finish(awaitable: Awaitable[Any], started: Span) -> Any:
    started._enter()
    error: BaseException | None = None
    try:
        return await awaitable
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_span(started, error)


@contextmanager
def span(name: str, kind: str, attributes: Mapping[str, AttributeValue], *,
         carrier: Carrier | None = None) -> Iterator[Span | None]:
    """:func:`start_span` as a ``with`` block: the span is current inside it, an
    :class:`Exception` leaving it is recorded (:meth:`Span.failed`), and it ends with it.
    Yields ``None`` while tracing is off."""
    started = start_span(name, kind, attributes, carrier=carrier, current=True)
    if started is None:
        yield None
        return
    try:
        yield started
    except Exception as exc:
        started.failed(exc)
        raise
    finally:
        started.end()


def carrier_of(pairs: Iterable[tuple[str, Any]]) -> Carrier:
    """The ``(traceparent, tracestate)`` among message headers or MQTT user properties given
    as ``(name, value)`` pairs (values text or bytes): the first of each; a value that is
    longer than its limit, or not text or bytes, counts as missing."""
    traceparent = tracestate = None
    for name, value in pairs:
        if name == TRACEPARENT:
            if traceparent is None:
                traceparent = _bounded(value, MAX_TRACEPARENT)
        elif name == TRACESTATE and tracestate is None:
            tracestate = _bounded(value, MAX_TRACESTATE)
    return traceparent, tracestate


def _bounded(value: object, limit: int) -> str | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > limit:
            return None
        return bytes(value).decode("latin-1")
    if isinstance(value, str) and len(value) <= limit:
        return value
    return None


def messaging_attributes(system: str, operation: str, kind: str, destination: str,
                         extra: Mapping[str, AttributeValue] | None = None,
                         ) -> dict[str, AttributeValue]:
    """The semantic-convention attributes of a messaging span: ``messaging.system``,
    ``messaging.operation.name`` (*operation*, the system's own word: ``publish``, ``send``,
    ``receive``, ``process``), ``messaging.operation.type`` (*kind*: ``send``, ``receive``,
    ``process``), ``messaging.destination.name``, and *extra*."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": system,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": destination,
    }
    if extra:
        attributes.update(extra)
    return attributes


def consumer_span(message: Any, correlation_id: str | None, socket: object) -> Span | None:
    """Start the ``CONSUMER`` span for handling bus *message* received on *socket*, make it
    current, and return it (``None`` while tracing is off). Call :meth:`Span.end`."""
    active = tracer()
    if active is None:
        return None
    api = _api()
    headers = message.headers
    parent = _parent(headers.get(TRACEPARENT), headers.get(TRACESTATE))
    topic = message.topic
    attributes = messaging_attributes(_system(socket), "process", "process", topic)
    attributes["messaging.destination"] = topic  # (the name before semantic conventions 1.26)
    attributes["messaging.operation"] = "process"
    if message.message_id is not None:
        attributes["messaging.message.id"] = message.message_id
    if correlation_id is not None:
        attributes[CORRELATION_ATTRIBUTE] = correlation_id
    otel_span = active.start_span(f"process {topic}", context=parent,
                                  kind=api.SpanKind.CONSUMER, attributes=attributes)
    if correlation_id is None:
        correlation_id = f"{otel_span.get_span_context().trace_id:032x}"
        otel_span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
    token = api.context.attach(api.trace.set_span_in_context(otel_span))
    return Span(otel_span, token, correlation_id)


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


async def serve_request(app: ASGIApp, scope: Any, receive: Any, send: Any) -> None:
    """Run the HTTP request *scope* with *app* in a ``SERVER`` span (what
    :class:`~trionet.asgi.ASGIApplication` does while tracing is on)."""
    active = tracer()
    if active is None:
        await app(scope, receive, send)
        return
    api = _api()
    traceparent = tracestate = None
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            if traceparent is None:
                traceparent = value.decode("latin-1")
        elif name == b"tracestate" and tracestate is None:
            tracestate = value.decode("latin-1")
    method = scope.get("method", "GET")
    span = active.start_span(method, context=_parent(traceparent, tracestate),
                             kind=api.SpanKind.SERVER, attributes={
                                 "http.request.method": method,
                                 "url.path": scope.get("path", ""),
                                 "url.scheme": scope.get("scheme", "http"),
                             })
    correlation_id = _observability.current_correlation_id()
    correlation_token = None
    if correlation_id is None:
        correlation_id = f"{span.get_span_context().trace_id:032x}"
        correlation_token = _observability.set_correlation_id(correlation_id)
    span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
    token = api.context.attach(api.trace.set_span_in_context(span))

    async def send_noting_status(message: Any) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(api.Status(api.error))
        await send(message)

    try:
        await app(scope, receive, send_noting_status)
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(api.Status(api.error, type(exc).__name__))
        raise
    finally:
        api.context.detach(token)
        if correlation_token is not None:
            _observability.reset_correlation_id(correlation_token)
        span.end()
