"""Frozen option records of the MQTT client (no paho, no I/O)."""

from __future__ import annotations

import secrets
import ssl
import string
from dataclasses import dataclass
from typing import Literal, TypedDict

from ..errors import ConfigurationError
from ..supervision import RetryPolicy
from ..tls import TLSOptions, client_context
from ._auth import Authenticator
from ._message import MAX_PACKET_SIZE, MQTTV5, MQTTV311, Will
from ._reconnect import ReconnectPolicy
from ._topics import validate_topic

__all__ = ["ClientOptions", "EngineSettings", "MQTTClientOptions", "build_options",
           "default_client_id"]

_ID_ALPHABET = string.ascii_letters + string.digits


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
    #: MQTT 5 enhanced authentication (None: none)
    authenticator: Authenticator | None = None


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
    authenticator: Authenticator | None
    tls: ssl.SSLContext | TLSOptions | bool | None
    transport: Literal["tcp", "websockets"]
    websocket_path: str
    websocket_headers: dict[str, str] | None
    will: Will | None
    reconnect: ReconnectPolicy | RetryPolicy | bool
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


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The validated options of an :class:`~trionet.mqtt.MQTTClient` that are not the
    connection's (those are :class:`EngineSettings`); see the client's docstring."""

    client_id: str
    protocol: int
    backend: Literal["thread", "trio"]
    allow_insecure_auth: bool
    #: None: do not reconnect
    policy: ReconnectPolicy | None
    max_concurrency: int
    ack_processed: bool
    on_handler_error: Literal["log", "raise"]
    subscription_buffer_size: int
    handler_buffer_size: int
    max_buffered_messages: int
    connect_timeout: float
    close_timeout: float
    reply_topic: str | None
    max_packet_size: int | None

    @property
    def v5(self) -> bool:
        """Whether the client speaks MQTT 5."""
        return self.protocol == 5


def default_client_id() -> str:
    """A random client id every MQTT broker must accept: ``trionet`` and 16 letters and digits.

    MQTT 3.1.1 §3.1.3.1 obliges brokers to accept 1 to 23 characters of ``[0-9a-zA-Z]`` only;
    16 characters from 62 give about 95 random bits.
    """
    return "trionet" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def build_options(
    client_id: str | None,
    *,
    protocol: int,
    clean_start: bool,
    session_expiry: int | None,
    keepalive: int,
    username: str | None,
    password: str | None,
    allow_insecure_auth: bool,
    tls: ssl.SSLContext | TLSOptions | bool | None,
    transport: Literal["tcp", "websockets"],
    websocket_path: str,
    websocket_headers: dict[str, str] | None,
    will: Will | None,
    reconnect: ReconnectPolicy | RetryPolicy | bool,
    max_inflight: int,
    receive_maximum: int | None,
    max_packet_size: int | None,
    ack: Literal["received", "processed"],
    max_concurrency: int,
    on_handler_error: Literal["log", "raise"],
    subscription_buffer_size: int,
    handler_buffer_size: int,
    max_buffered_messages: int,
    connect_timeout: float,
    close_timeout: float,
    reply_topic: str | None,
    backend: Literal["thread", "trio"],
    authenticator: Authenticator | None = None,
) -> tuple[ClientOptions, EngineSettings]:
    """Check :class:`~trionet.mqtt.MQTTClient`'s keyword options and freeze them.

    Raises:
        ConfigurationError: an option is invalid.
    """
    if backend not in ("thread", "trio"):
        raise ConfigurationError(f"backend must be 'thread' or 'trio', not {backend!r}")
    if protocol not in (MQTTV311, MQTTV5):
        raise ConfigurationError(
            f"protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5), not {protocol!r}"
        )
    if client_id is not None and not isinstance(client_id, str):
        raise ConfigurationError("client_id must be a str")
    if not client_id and not clean_start:
        raise ConfigurationError(
            "a persistent session (clean_start=False) needs a stable client_id"
        )
    if client_id is None:
        client_id = default_client_id()
    if transport not in ("tcp", "websockets"):
        raise ConfigurationError(
            f"transport must be 'tcp' or 'websockets', not {transport!r}"
        )
    if not isinstance(keepalive, int) or not 0 <= keepalive <= 65535:
        raise ConfigurationError("keepalive must be an int between 0 and 65535 seconds")
    if session_expiry is not None and not 0 <= session_expiry <= 0xFFFFFFFF:
        raise ConfigurationError("session_expiry must fit in 32 bits")
    if session_expiry is not None and protocol != MQTTV5:
        raise ConfigurationError("session_expiry needs MQTT 5 (protocol=5)")
    if receive_maximum is not None and (
        protocol != MQTTV5 or not 1 <= receive_maximum <= 65535
    ):
        raise ConfigurationError("receive_maximum needs MQTT 5 and must be 1..65535")
    if max_packet_size is not None and (
        not isinstance(max_packet_size, int) or not 16 <= max_packet_size <= MAX_PACKET_SIZE
    ):
        raise ConfigurationError(
            f"max_packet_size must be an int between 16 and {MAX_PACKET_SIZE} bytes"
        )
    if will is not None and will.properties is not None and protocol != MQTTV5:
        raise ConfigurationError("will properties need MQTT 5 (protocol=5)")
    for name, value, low in (
        ("max_inflight", max_inflight, 1),
        ("max_concurrency", max_concurrency, 1),
        ("subscription_buffer_size", subscription_buffer_size, 1),
        ("handler_buffer_size", handler_buffer_size, 1),
        ("max_buffered_messages", max_buffered_messages, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{name} must be an int >= {low}, got {value!r}")
    if max_inflight > 65000:
        raise ConfigurationError("max_inflight must be at most 65000 (packet ids are 16 bit)")
    if ack not in ("received", "processed"):
        raise ConfigurationError(f"ack must be 'received' or 'processed', not {ack!r}")
    if on_handler_error not in ("log", "raise"):
        raise ConfigurationError("on_handler_error must be 'log' or 'raise'")
    if connect_timeout <= 0 or close_timeout < 0:
        raise ConfigurationError("connect_timeout must be > 0 and close_timeout >= 0")
    if password is not None and username is None:
        raise ConfigurationError("a password needs a username")
    if not isinstance(allow_insecure_auth, bool):
        raise ConfigurationError("allow_insecure_auth must be True or False")
    if reply_topic is not None:
        validate_topic(reply_topic)
    if authenticator is not None:
        if not isinstance(authenticator, Authenticator):
            raise ConfigurationError(
                "authenticator must have a method name and start(), step() and finish() "
                "(see trionet.mqtt.Authenticator)"
            )
        if protocol != MQTTV5:
            raise ConfigurationError("enhanced authentication (authenticator=) needs MQTT 5 "
                                     "(protocol=5)")
        if not isinstance(authenticator.method, str) or not authenticator.method:
            raise ConfigurationError("an authenticator's method must be a non-empty str")
    context = client_context(tls)
    if reconnect is True:
        policy: ReconnectPolicy | None = ReconnectPolicy()
    elif reconnect is False:
        policy = None
    elif isinstance(reconnect, ReconnectPolicy):
        policy = reconnect
    elif isinstance(reconnect, RetryPolicy):
        policy = ReconnectPolicy.from_retry(reconnect)
    else:
        raise ConfigurationError(
            "reconnect must be a ReconnectPolicy, a RetryPolicy, True or False"
        )
    settings = EngineSettings(
        client_id=client_id,
        protocol=protocol,
        clean_start=clean_start,
        session_expiry=session_expiry,
        keepalive=keepalive,
        username=username,
        password=password,
        tls=context,
        transport=transport,
        websocket_path=websocket_path,
        websocket_headers=websocket_headers,
        will=will,
        max_inflight=max_inflight,
        receive_maximum=receive_maximum,
        connect_timeout=connect_timeout,
        max_packet_size=max_packet_size,
        authenticator=authenticator,
    )
    options = ClientOptions(
        client_id=client_id,
        protocol=protocol,
        backend=backend,
        allow_insecure_auth=allow_insecure_auth,
        policy=policy,
        max_concurrency=max_concurrency,
        ack_processed=ack == "processed",
        on_handler_error=on_handler_error,
        subscription_buffer_size=subscription_buffer_size,
        handler_buffer_size=handler_buffer_size,
        max_buffered_messages=max_buffered_messages,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        reply_topic=reply_topic,
        max_packet_size=max_packet_size,
    )
    return options, settings
