"""Frozen option records of the MQTT client (no paho, no I/O)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

from ._message import Will

if TYPE_CHECKING:
    from ._reconnect import ReconnectPolicy

__all__ = ["EngineSettings", "MQTTClientOptions"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Everything the engine needs to build and connect its paho client."""

    client_id: str
    protocol: int
    clean_start: bool
    session_expiry: int | None
    keepalive: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    transport: str
    websocket_path: str
    websocket_headers: dict[str, str] | None
    will: Will | None
    max_inflight: int
    receive_maximum: int | None
    connect_timeout: float
    #: the client's own cap on outgoing packets (None: MQTT's limit)
    max_packet_size: int | None = None


class MQTTClientOptions(TypedDict, total=False):
    """Keyword options of :class:`MQTTClient` (also accepted by :func:`open_mqtt_client`)."""

    client_id: str | None
    protocol: int
    clean_start: bool
    session_expiry: int | None
    keepalive: int
    username: str | None
    password: str | None
    allow_insecure_auth: bool
    tls: ssl.SSLContext | bool | None
    transport: Literal["tcp", "websockets"]
    websocket_path: str
    websocket_headers: dict[str, str] | None
    will: Will | None
    reconnect: ReconnectPolicy | bool
    max_inflight: int
    receive_maximum: int | None
    max_packet_size: int | None
    ack: Literal["received", "processed"]
    max_concurrency: int
    on_handler_error: Literal["log", "raise"]
    subscription_buffer_size: int
    handler_buffer_size: int
    max_buffered_messages: int
    connect_timeout: float
    close_timeout: float
    reply_topic: str | None
    backend: Literal["thread", "trio"]
