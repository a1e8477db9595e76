"""Metrics every component reports: counters and histograms, to Prometheus or OpenTelemetry.

trionet's components call two functions at the moments that matter — :func:`count` (a counter
goes up) and :func:`observe` (a value lands in a histogram) — with a fixed, small set of
labels (never a topic, path or peer address, so the number of series stays bounded). Nothing is
recorded until a *sink* is installed; without one each call costs one check of an empty list.

Sinks:

* :class:`MetricsRegistry`: keeps counters and histograms in memory and writes them in
  Prometheus's text format (:meth:`MetricsRegistry.exposition`); :func:`prometheus_endpoint`
  serves that as an ASGI endpoint (mount it on a :class:`trionet.asgi.App` at ``/metrics``).
* :class:`OpenTelemetryMetrics`: forwards to OpenTelemetry instruments (the ``otel`` extra,
  ``opentelemetry-api``; configure a ``MeterProvider`` with the SDK and an exporter).
* any object with ``count(name, value, labels)`` and ``observe(name, value, labels)``.

::

    from trionet import metrics

    registry = metrics.MetricsRegistry()
    with metrics.installed(registry):
        metrics.count("trionet_messages_total", component="mqtt", direction="in")
        metrics.observe("trionet_request_duration_seconds", 0.012, component="asgi")
    assert 'trionet_messages_total{component="mqtt",direction="in"} 1' in registry.exposition()

What the components report (the ``component`` label names the component):

======================================== ========= =============================================
name                                     kind      labels and meaning
======================================== ========= =============================================
``trionet_messages_total``               counter   ``direction`` ``in``/``out``: messages
                                                   received (delivered to the application) and
                                                   sent, for ``mqtt``, ``kafka``, ``bus``,
                                                   ``mail``
``trionet_requests_total``               counter   ``outcome`` ``ok``/``error``: requests
                                                   answered by ``asgi`` (``error``: status
                                                   500 or more), ``channel``, ``aproto``, and
                                                   messages handled by ``bus`` handlers
``trionet_request_duration_seconds``     histogram the time from a request's arrival to its
                                                   answer (same components)
``trionet_reconnects_total``             counter   reconnects (``mqtt``)
======================================== ========= =============================================
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from ._threads import ThreadLock

__all__ = [
    "DEFAULT_BUCKETS",
    "MetricsRegistry",
    "MetricsSink",
    "OpenTelemetryMetrics",
    "count",
    "install",
    "installed",
    "message",
    "observe",
    "prometheus_endpoint",
    "reconnect",
    "recording",
    "request",
    "sinks",
    "uninstall",
]

#: Histogram bucket upper bounds, in seconds: 0.5 ms to 10 s.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

#: The most label combinations a registry keeps per metric name; further ones are dropped and
#: counted (:attr:`MetricsRegistry.dropped`), so a bug or a hostile input cannot make it grow.
MAX_SERIES_PER_METRIC = 1000


class MetricsSink(Protocol):
    """What a sink implements (both methods are called on the caller's thread, quickly)."""

    def count(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Add *value* to the counter *name* with *labels*."""

    def observe(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Record *value* in the histogram *name* with *labels*."""


#: The installed sinks (read-only; use :func:`install`). A tuple, replaced as a whole, so that
#: readers need no lock; hot paths test ``if metrics.sinks:`` before calling anything.
sinks: tuple[MetricsSink, ...] = ()
_install_lock = ThreadLock()  # installing happens rarely, from any thread


def install(sink: MetricsSink) -> None:
    """Send every component's metrics to *sink* too (process-wide, until :func:`uninstall`)."""
    global sinks
    with _install_lock:
        if sink not in sinks:
            sinks = (*sinks, sink)


def uninstall(sink: MetricsSink) -> None:
    """Stop sending metrics to *sink* (nothing happens if it was not installed)."""
    global sinks
    with _install_lock:
        sinks = tuple(s for s in sinks if s is not sink)


@contextmanager
def installed(sink: MetricsSink) -> Iterator[MetricsSink]:
    """:func:`install` *sink* for the duration of a ``with`` block (tests, scripts)."""
    install(sink)
    try:
        yield sink
    finally:
        uninstall(sink)


def count(name: str, value: float = 1.0, **labels: str) -> None:
    """Add *value* (default 1) to counter *name*; a no-op while no sink is installed."""
    for sink in sinks:
        sink.count(name, value, labels)


def observe(name: str, value: float, **labels: str) -> None:
    """Record *value* in histogram *name*; a no-op while no sink is installed."""
    for sink in sinks:
        sink.observe(name, value, labels)


def recording() -> bool:
    """True when at least one sink is installed (to skip measuring when nobody listens)."""
    return bool(sinks)


# -- what the components call (each a no-op while no sink is installed) -----------------------


def message(component: str, direction: str, number: int = 1) -> None:
    """*number* messages received (``"in"``) or sent (``"out"``) by *component*."""
    if sinks:
        count("trionet_messages_total", number, component=component, direction=direction)


def request(component: str, seconds: float, ok: bool) -> None:
    """One request answered by *component* after *seconds*, successfully or not."""
    if sinks:
        count("trionet_requests_total", 1, component=component, outcome="ok" if ok else "error")
        observe("trionet_request_duration_seconds", seconds, component=component)


def reconnect(component: str) -> None:
    """*component* reconnected."""
    if sinks:
        count("trionet_reconnects_total", 1, component=component)


LabelKey = tuple[tuple[str, str], ...]


class _Histogram:
    __slots__ = ("counts", "sum", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.sum = 0.0
        self.total = 0


class MetricsRegistry:
    """Counters and histograms kept in memory, exposed in Prometheus's text format.

    Args:
        buckets: the histograms' bucket upper bounds (ascending; ``+Inf`` is implicit).
        max_series: label combinations kept per metric name; more are dropped and counted.

    Attributes:
        dropped: observations dropped because a metric had *max_series* series already.
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS, *,
                 max_series: int = MAX_SERIES_PER_METRIC) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError("buckets must be a non-empty ascending sequence")
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.buckets = bounds
        self.max_series = max_series
        self.dropped = 0
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, dict[LabelKey, _Histogram]] = {}

    def _series(self, table: dict[str, dict[LabelKey, Any]], name: str,
                labels: Mapping[str, str]) -> tuple[dict[LabelKey, Any], LabelKey] | None:
        key = tuple(sorted(labels.items()))
        series = table.get(name)
        if series is None:
            series = table[name] = {}
        if key not in series and len(series) >= self.max_series:
            self.dropped += 1
            return None
        return series, key

    def count(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        found = self._series(self._counters, name, labels)
        if found is not None:
            series, key = found
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        found = self._series(self._histograms, name, labels)
        if found is None:
            return
        series, key = found
        histogram = series.get(key)
        if histogram is None:
            histogram = series[key] = _Histogram(len(self.buckets))
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                histogram.counts[index] += 1
                break
        histogram.sum += value
        histogram.total += 1

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (0 if never counted), or a histogram's number of observations."""
        key = tuple(sorted(labels.items()))
        if name in self._histograms:
            histogram = self._histograms[name].get(key)
            return 0.0 if histogram is None else float(histogram.total)
        return self._counters.get(name, {}).get(key, 0.0)

    def exposition(self) -> str:
        """Every metric in Prometheus's text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for name in sorted(self._counters):
            lines.append(f"# TYPE {name} counter")
            for key, total in sorted(self._counters[name].items()):
                lines.append(f"{name}{_labels(key)} {_number(total)}")
        for name in sorted(self._histograms):
            lines.append(f"# TYPE {name} histogram")
            for key, histogram in sorted(self._histograms[name].items()):
                cumulative = 0
                for bound, seen in zip(self.buckets, histogram.counts, strict=True):
                    cumulative += seen
                    lines.append(f"{name}_bucket{_labels(key, le=_number(bound))} {cumulative}")
                lines.append(f'{name}_bucket{_labels(key, le="+Inf")} {histogram.total}')
                lines.append(f"{name}_sum{_labels(key)} {_number(histogram.sum)}")
                lines.append(f"{name}_count{_labels(key)} {histogram.total}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey, le: str | None = None) -> str:
    pairs = [f'{k}="{_escape(v)}"' for k, v in key]
    if le is not None:
        pairs.append(f'le="{le}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def prometheus_endpoint(registry: MetricsRegistry) -> Callable[..., Any]:
    """An ASGI endpoint that answers ``GET`` with *registry*'s exposition.

    Mount it on a :class:`trionet.asgi.App` (``app.add_route("/metrics", endpoint)``) or serve
    it alone with any ASGI server. Other methods get 405.
    """

    async def endpoint(scope: Mapping[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope.get("type") != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = registry.exposition().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})

    return endpoint


class OpenTelemetryMetrics:
    """A sink that forwards to OpenTelemetry: counters become ``Counter`` instruments and
    histograms ``Histogram`` instruments of one meter (created on first use).

    Needs ``opentelemetry-api`` (the ``otel`` extra). Without a configured ``MeterProvider``
    OpenTelemetry's API records nothing, as its documentation says; configure one with the SDK.

    Args:
        meter_provider: the provider (default: OpenTelemetry's global one).
    """

    def __init__(self, meter_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics as otel_metrics
        except ImportError as exc:  # pragma: no cover - the otel extra is in the test venv
            raise ImportError(
                "OpenTelemetryMetrics needs opentelemetry-api: pip install 'trionet[otel]'"
            ) from exc
        provider = meter_provider or otel_metrics.get_meter_provider()
        self._meter = provider.get_meter("trionet")
        self._counters: dict[str, Any] = {}
        self._histograms: dict[str, Any] = {}

    def count(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self._meter.create_counter(name)
        counter.add(value, dict(labels))

    def observe(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        histogram = self._histograms.get(name)
        if histogram is None:
            unit = "s" if name.endswith("_seconds") else ""
            histogram = self._histograms[name] = self._meter.create_histogram(name, unit=unit)
        histogram.record(value, dict(labels))
