"""``mqtt://`` URLs as :class:`~trionet.mqtt.MQTTClient` options (the grammar is
:mod:`trionet._mqtt_url`'s, shared with ``trionet.bus``)."""

from __future__ import annotations

from .._mqtt_url import split_mqtt_url
from ..errors import ConfigurationError
from ._message import MQTTV5, MQTTV311
from ._options import MQTTClientOptions

__all__ = ["parse_mqtt_url"]

_VERSIONS = {"4": MQTTV311, "3.1.1": MQTTV311, "311": MQTTV311, "5": MQTTV5, "5.0": MQTTV5}


def parse_mqtt_url(url: str) -> tuple[str, int | None, MQTTClientOptions]:
    """Split an MQTT URL into ``(host, port, client options)``.

    ``mqtt://user:password@host:1883/?client_id=x&keepalive=30&protocol=5&clean_start=false``
    (``&allow_insecure_auth=true`` to send that password without TLS);
    schemes ``mqtt``/``tcp``, ``mqtts``/``ssl``/``tls`` (TLS with default verification),
    ``ws`` and ``wss`` (the URL path is the WebSocket path).

    Raises:
        ConfigurationError: unknown scheme, bad port or bad query value.
    """
    parts = split_mqtt_url(url)
    options: MQTTClientOptions = {"transport": parts.transport}
    if parts.tls:
        options["tls"] = True
    if parts.username:
        options["username"] = parts.username
        if parts.password is not None:
            options["password"] = parts.password
    if parts.transport == "websockets" and parts.path:
        options["websocket_path"] = parts.path
    for key, value in parts.query:
        if key == "client_id":
            options["client_id"] = value
        elif key == "keepalive":
            if not value.isdigit():
                raise ConfigurationError(f"keepalive must be a number of seconds, not {value!r}")
            options["keepalive"] = int(value)
        elif key in ("protocol", "version"):
            if value not in _VERSIONS:
                raise ConfigurationError(f"unknown MQTT protocol version {value!r}")
            options["protocol"] = _VERSIONS[value]
        elif key in ("clean_start", "allow_insecure_auth"):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ConfigurationError(f"{key} must be true or false, not {value!r}")
            options[key] = value.lower() in ("true", "1")  # type: ignore[literal-required]
        else:
            raise ConfigurationError(f"unknown MQTT URL parameter {key!r}")
    return parts.host or "localhost", parts.port, options
