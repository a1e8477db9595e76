"""The one ``mqtt://`` URL grammar, shared by ``trionet.mqtt`` and ``trionet.bus`` (no I/O).

::

    scheme://[user[:password]@]host[:port][/path][?name=value&...]

* *scheme* chooses the transport and TLS: ``mqtt`` and ``tcp`` (plain TCP), ``mqtts``, ``ssl``
  and ``tls`` (TCP with TLS), ``ws`` and ``wss`` (WebSockets, without and with TLS);
* *user* and *password* are percent-decoded; the port must be 0 to 65535 (the default depends
  on the transport and TLS, and is the caller's business); for WebSockets *path* is the HTTP
  path of the endpoint;
* the query is a list of ``name=value`` pairs (blank values kept). Which names are known, and
  what their values mean, is up to the caller: :func:`trionet.mqtt.parse_mqtt_url` knows the
  client's options, ``trionet.bus`` its ``MqttConfig`` fields.

This module imports no MQTT library, so that ``trionet.bus`` reads ``mqtt://`` URLs without
paho-mqtt installed.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError

__all__ = ["MQTTURL", "MQTT_SCHEMES", "split_mqtt_url"]

#: scheme -> (transport, TLS)
MQTT_SCHEMES: dict[str, tuple[Literal["tcp", "websockets"], bool]] = {
    "mqtt": ("tcp", False),
    "tcp": ("tcp", False),
    "mqtts": ("tcp", True),
    "ssl": ("tcp", True),
    "tls": ("tcp", True),
    "ws": ("websockets", False),
    "wss": ("websockets", True),
}


@dataclass(frozen=True, slots=True)
class MQTTURL:
    """The parts of an ``mqtt://`` URL (see the module docstring)."""

    scheme: str
    transport: Literal["tcp", "websockets"]
    tls: bool
    #: the host name or address (None when the URL names none)
    host: str | None
    port: int | None
    #: percent-decoded; None when absent, ``""`` for ``mqtt://@host``
    username: str | None
    password: str | None
    path: str
    query: tuple[tuple[str, str], ...]


def split_mqtt_url(url: str, *, schemes: Collection[str] = MQTT_SCHEMES) -> MQTTURL:
    """Split an MQTT URL into its parts.

    Args:
        url: the URL.
        schemes: the schemes the caller accepts (a subset of :data:`MQTT_SCHEMES`).

    Raises:
        ConfigurationError: an unknown scheme, a malformed URL, or a port out of range.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid MQTT URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes or scheme not in MQTT_SCHEMES:
        raise ConfigurationError(
            f"unknown MQTT URL scheme {parts.scheme!r} (use {', '.join(schemes)})"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"invalid port in MQTT URL {url!r}: {exc}") from None
    transport, tls = MQTT_SCHEMES[scheme]
    return MQTTURL(
        scheme=scheme,
        transport=transport,
        tls=tls,
        host=parts.hostname,
        port=port,
        username=None if parts.username is None else urllib.parse.unquote(parts.username),
        password=None if parts.password is None else urllib.parse.unquote(parts.password),
        path=parts.path,
        query=tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)),
    )
