"""Bridges between the transports: a browser fed by a subscription, an HTTP route answered by
the bus.

* :class:`Bridge`: a server-sent events endpoint (``text/event-stream``) and a websocket
  endpoint, fed by an MQTT subscription, a bus socket or a Kafka consumer (one per
  connection), with a bounded :class:`Feed` between the subscription and the response;
* :func:`bus_request`: an endpoint that forwards the request body as a bus request and answers
  with the reply (``POST /orders`` -> ``orders/new`` -> response), with 503/504/413 for the
  failures;
* :func:`on_transports`: one bus handler reachable over several transports (MQTT, Kafka and
  the Channel, ``channel://``) with one declaration.

Backpressure, end to end: the response's ``send`` waits while the browser is not reading, so
the feed fills; a full feed either drops its oldest message and counts it (``"drop-oldest"``,
the default) or stops reading the subscription (``"pause"``), whose own bounded buffer and
flow control then slow the broker down. Memory per connection is bounded either way. See
``docs/bridges.rst``.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ._bridge import (
    DEFAULT_MAX_STREAMS as DEFAULT_MAX_STREAMS,
    Bridge as Bridge,
    BridgeFull as BridgeFull,
    BridgeStatistics as BridgeStatistics,
)
from ._feed import (
    DEFAULT_MAX_BUFFER_SIZE as DEFAULT_MAX_BUFFER_SIZE,
    OVERFLOW_POLICIES as OVERFLOW_POLICIES,
    Feed as Feed,
    FeedStatistics as FeedStatistics,
    Overflow as Overflow,
    open_feed as open_feed,
)
from ._request import (
    DEFAULT_MAX_REQUEST_SIZE as DEFAULT_MAX_REQUEST_SIZE,
    HTTP_STATUS_HEADER as HTTP_STATUS_HEADER,
    bus_request as bus_request,
)
from ._sources import (
    Source as Source,
    bus_source as bus_source,
    describe as describe,
    kafka_source as kafka_source,
    mqtt_source as mqtt_source,
)
from ._transports import on_transports as on_transports

__all__ = [
    "DEFAULT_MAX_BUFFER_SIZE",
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_MAX_STREAMS",
    "HTTP_STATUS_HEADER",
    "OVERFLOW_POLICIES",
    "Bridge",
    "BridgeFull",
    "BridgeStatistics",
    "Feed",
    "FeedStatistics",
    "Overflow",
    "Source",
    "bus_request",
    "bus_source",
    "describe",
    "kafka_source",
    "mqtt_source",
    "on_transports",
    "open_feed",
]

_fix_public_modules(globals())
