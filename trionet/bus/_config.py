"""Broker configurations and the ``memory://``, ``mqtt://``, ``kafka://`` and ``channel://``
URLs (no I/O).

A configuration is a frozen dataclass; :func:`parse_url` turns a URL into one, and
:meth:`BusConfig.to_url` goes back (with the password hidden). Nothing here imports an MQTT or
Kafka library: the providers that need them are imported when a socket is made.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .._mqtt_url import split_mqtt_url
from ..errors import ConfigurationError
from ._message import EnvelopeCodec
from ._topics import normalize_topics

__all__ = [
    "BusConfig",
    "ChannelConfig",
    "KafkaConfig",
    "MemoryConfig",
    "MqttConfig",
    "parse_url",
]

Topics: TypeAlias = str | Sequence[str] | None

#: The default time a request waits for its reply, in seconds.
DEFAULT_REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class BusConfig:
    """Options every broker understands (all keyword-only; also URL query parameters).

    Attributes:
        default_subscription_topics: topics a socket subscribes to when it is made without
            any (spa_dat's name). :meth:`DistributedApplication.application
            <trionet.bus.DistributedApplication.application>` passes its own instead.
        codec: how envelopes are written: ``"msgpack"`` (binary-safe) or ``"json"``
            (spa_dat's JSON). Receivers read both. ``None``: the broker's default (msgpack;
            ``memory://`` hands message objects over without encoding them).
        max_queue: how many received messages a socket buffers before the transport is made
            to wait (backpressure).
        request_timeout: the default deadline of :meth:`BusSocket.request
            <trionet.bus.BusSocket.request>`, in seconds (``None``: wait forever).
        client_name: put into messages published without a ``client_name``.
    """

    scheme: ClassVar[str] = ""

    default_subscription_topics: Topics = None
    codec: EnvelopeCodec | None = None
    max_queue: int = 1000
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    client_name: str | None = None

    def __post_init__(self) -> None:
        if self.codec not in (None, "msgpack", "json"):
            raise ConfigurationError(f"unknown codec {self.codec!r}; use 'msgpack' or 'json'")
        if self.max_queue < 1:
            raise ConfigurationError("max_queue must be at least 1")
        if self.request_timeout is not None and not self.request_timeout > 0:
            raise ConfigurationError("request_timeout must be positive (or None)")
        normalize_topics(self.default_subscription_topics)

    @property
    def topics(self) -> tuple[str, ...]:
        """:attr:`default_subscription_topics` as a tuple of checked filters."""
        return normalize_topics(self.default_subscription_topics)

    def replace(self, **changes: Any) -> BusConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_url(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _common_query(self) -> list[tuple[str, str]]:
        query: list[tuple[str, str]] = []
        if self.codec is not None:
            query.append(("codec", self.codec))
        if self.max_queue != 1000:
            query.append(("max_queue", str(self.max_queue)))
        if self.request_timeout != DEFAULT_REQUEST_TIMEOUT:
            query.append(("request_timeout", _fmt(self.request_timeout)))
        if self.client_name is not None:
            query.append(("client_name", self.client_name))
        if self.topics:
            query.append(("topics", ",".join(self.topics)))
        return query


@dataclass(frozen=True, kw_only=True)
class MemoryConfig(BusConfig):
    """An in-process broker (``memory://name``).

    Attributes:
        name: which in-process broker: sockets made from configurations with the same name
            (in one process) talk to each other. ``memory://`` is the broker ``"default"``.
        overflow: what publishing does when a subscriber's queue is full: ``"block"`` waits
            for room (backpressure, lossless), ``"drop"`` drops the message for that
            subscriber and counts it, as an MQTT broker with a full queue would.
    """

    scheme: ClassVar[str] = "memory"

    name: str = "default"
    overflow: Literal["block", "drop"] = "block"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.overflow not in ("block", "drop"):
            raise ConfigurationError(f"overflow must be 'block' or 'drop', not {self.overflow!r}")

    def to_url(self) -> str:
        query = self._common_query()
        if self.overflow != "block":
            query.append(("overflow", self.overflow))
        name = "" if self.name == "default" else quote(self.name, safe="")
        return f"memory://{name}{_query(query)}"


@dataclass(frozen=True, kw_only=True)
class MqttConfig(BusConfig):
    """An MQTT broker (``mqtt://user:password@host:port?qos=1``; ``mqtts://`` for TLS).

    The field names follow spa_dat's ``MqttConfig``.

    Attributes:
        host: the broker's host name.
        port: its port (1883, or 8883 with TLS).
        username: the user name, if the broker wants one.
        password: the password.
        keepalive: seconds between keepalive pings.
        qos: the quality of service of publishes and subscriptions (0, 1 or 2).
        client_id: the base of every socket's MQTT client id. With one, each application's
            socket connects as ``{client_id}-{app name}`` (stable across restarts, so a
            persistent session can resume; see "Client ids" in the bus documentation for
            names with other characters than ``[A-Za-z0-9._-]``, for a second socket of the
            same name, and for MQTT 3.1.1's 23-character ids); without, ids are random.
        clean_start: start each connection without a stored session. ``False`` keeps
            unacknowledged QoS 1/2 messages for the client id across reconnections.
        tls: connect with TLS (system trust store), or an :class:`ssl.SSLContext`.
        version: the MQTT protocol version, ``"3.1.1"`` or ``"5"``.
        allow_insecure_auth: send the password without TLS (``?allow_insecure_auth=true``);
            otherwise a password on a connection without TLS is refused before connecting.
        authenticator: MQTT 5 enhanced authentication: a function returning a new
            :class:`trionet.mqtt.Authenticator` (``lambda: ScramAuthenticator(user,
            password)``), called once per socket, since an authenticator serves one client.
            Not a URL parameter. The same rule as a password applies without TLS.
    """

    scheme: ClassVar[str] = "mqtt"

    host: str = "127.0.0.1"
    port: int | None = None
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    qos: int = 1
    client_id: str | None = None
    clean_start: bool = True
    tls: Any = False
    version: Literal["3.1.1", "5"] = "5"
    allow_insecure_auth: bool = False
    authenticator: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.authenticator is not None:
            if not callable(self.authenticator) or hasattr(self.authenticator, "method"):
                raise ConfigurationError(
                    "authenticator must be a function returning a new authenticator per "
                    "socket (lambda: ScramAuthenticator(user, password)), not an authenticator")
            if self.version != "5":
                raise ConfigurationError("enhanced authentication (authenticator=) needs MQTT 5")
        if self.qos not in (0, 1, 2):
            raise ConfigurationError(f"qos must be 0, 1 or 2, not {self.qos!r}")
        if self.version not in ("3.1.1", "5"):
            raise ConfigurationError(f"version must be '3.1.1' or '5', not {self.version!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigurationError(f"invalid port {self.port!r}")
        if self.keepalive < 0:
            raise ConfigurationError("keepalive must be >= 0")

    @property
    def effective_port(self) -> int:
        """:attr:`port`, or the protocol's default (1883; 8883 with TLS)."""
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883

    def to_url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":***"
            auth += "@"
        query = self._common_query()
        for name, default in (("keepalive", 60), ("qos", 1), ("client_id", None),
                              ("clean_start", True), ("version", "5"),
                              ("allow_insecure_auth", False)):
            value = getattr(self, name)
            if value != default:
                query.append((name, _fmt(value)))
        return f"{scheme}://{auth}{_host(self.host)}:{self.effective_port}{_query(query)}"


@dataclass(frozen=True, kw_only=True)
class KafkaConfig(BusConfig):
    """A Kafka cluster (``kafka://host:port,host2:port?group=g``).

    Bus topics may use ``/`` between levels, as on the other brokers; on Kafka each ``/``
    becomes ``.`` (``sensors/kitchen`` is the Kafka topic ``sensors.kitchen``), so one
    application runs unchanged on every broker. Filters may use ``+`` and ``#`` over those
    levels; they become a regular-expression subscription.

    Attributes:
        bootstrap_servers: ``"host:port"`` or several, comma-separated.
        group_id: the consumer-group prefix (URL: ``group=``). Each application consumes in
            its own group, ``{group_id}.{app name}``: every application sees every message,
            as on the other brokers, and several instances of one service (same prefix, same
            application name) share the work. ``None``: the prefix ``trionet``.
        client_id: the base of the Kafka client ids; with one, the reply topics are stable
            (``_trionet.reply.{client_id}-{app name}``), without, each socket makes a new one.
            Sockets open at once never share one (see "Client ids" in the bus documentation).
        offset_reset: where a group without committed offsets starts reading: ``"latest"``
            or ``"earliest"``.
        create_topics: create missing topics on subscribe/publish (with :attr:`partitions`
            and :attr:`replication_factor`); they are never deleted, nor changed when they
            exist.
        partitions: how many partitions the topics the bus creates get (URL:
            ``partitions=``; default 1). Several instances of one application (same group
            prefix and name) share a topic's partitions, so this is how many of them can work
            at once; records with the same :attr:`~trionet.bus.BusMessage.key` go to the same
            partition. Reply topics always have one partition.
        replication_factor: how many brokers keep a copy of each partition of the topics the
            bus creates (URL: ``replication_factor=``; default 1, right for one broker).
        backend: the Kafka engine of the bus's producers, consumers and admin clients:
            ``"kafka-python"`` (the default) or ``"confluent"`` (librdkafka; see the Kafka
            guide). ``None``: the default.
        commit_interval: seconds between offset commits of acknowledged messages (and at
            shutdown and rebalances).
        consumer_config: extra kafka-python consumer settings (URL: ``consumer.NAME=VALUE``),
            e.g. ``session_timeout_ms``.
        producer_config: extra kafka-python producer settings (URL: ``producer.NAME=VALUE``).
        tls: connect with TLS: ``True`` (the system's CAs; URL: ``tls=true``), a
            :class:`~trionet.tls.TLSOptions` (a private CA, a client certificate) or, with the
            kafka-python engine, an :class:`ssl.SSLContext`; the ``tls=`` of the Kafka
            clients, given to the bus's producer, consumers and admin client alike.
    """

    scheme: ClassVar[str] = "kafka"

    bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092"
    group_id: str | None = None
    client_id: str | None = None
    offset_reset: Literal["latest", "earliest"] = "latest"
    create_topics: bool = True
    commit_interval: float = 1.0
    partitions: int = 1
    replication_factor: int = 1
    backend: str | None = None
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)
    tls: Any = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.offset_reset not in ("latest", "earliest"):
            raise ConfigurationError(
                f"offset_reset must be 'latest' or 'earliest', not {self.offset_reset!r}"
            )
        if not self.bootstrap_servers:
            raise ConfigurationError("bootstrap_servers must name at least one broker")
        if not self.commit_interval > 0:
            raise ConfigurationError("commit_interval must be positive")
        _check_counts(self, ("partitions", "replication_factor"), 10_000)
        if self.backend is not None and (not isinstance(self.backend, str) or not self.backend):
            raise ConfigurationError(f"backend must be an engine name, not {self.backend!r}")

    @property
    def servers(self) -> list[str]:
        """:attr:`bootstrap_servers` as a list."""
        if isinstance(self.bootstrap_servers, str):
            return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        return list(self.bootstrap_servers)

    def to_url(self) -> str:
        query = self._common_query()
        for name, default in (("group_id", None), ("client_id", None),
                              ("offset_reset", "latest"), ("create_topics", True),
                              ("commit_interval", 1.0), ("partitions", 1),
                              ("replication_factor", 1), ("backend", None)):
            value = getattr(self, name)
            if value != default:
                query.append(("group" if name == "group_id" else name, _fmt(value)))
        if self.tls:
            query.append(("tls", "true"))
        for prefix, extra in (("consumer", self.consumer_config),
                              ("producer", self.producer_config)):
            query.extend((f"{prefix}.{key}", _fmt(value)) for key, value in extra.items())
        return f"kafka://{','.join(self.servers)}{_query(query)}"


@dataclass(frozen=True, kw_only=True)
class ChannelConfig(BusConfig):
    """Bus handlers served to :mod:`trionet.channel` clients (``channel://host:port``).

    Not a broker: a socket of this configuration *listens* on ``host:port`` for
    aiomas-style request-reply connections (:func:`trionet.channel.open_connection`), and each
    request a client sends with :func:`~trionet.bus.channel_request` becomes a message for the
    application's handler, whose reply goes back on the same connection. With
    :func:`~trionet.bridges.on_transports` one handler answers on MQTT, Kafka and the Channel.
    See "The Channel transport" in the bus guide.

    Attributes:
        host: the address to listen on (loopback by default).
        port: the port (``0``: a free one; :attr:`ChannelSocketProvider.addresses
            <trionet.bus.ChannelSocketProvider.addresses>` tells which).
        channel_codec: the Channel codec, ``"json"`` (aiomas's default; payloads travel as
            text) or ``"msgpack"`` (binary payloads). Clients must use the same.
        max_pending: how many requests one connection may have unanswered; past that the
            server stops reading that connection (backpressure through TCP).
        max_connections: how many client connections may be open at once; more are closed
            when they connect.

    The :attr:`~BusConfig.request_timeout` (30 s by default) is how long a request waits for
    the handler's reply: the handler runs under that deadline and the client gets a failure
    when it passes.
    """

    scheme: ClassVar[str] = "channel"

    host: str = "127.0.0.1"
    port: int = 0
    channel_codec: Literal["json", "msgpack"] = "json"
    max_pending: int = 64
    max_connections: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channel_codec not in ("json", "msgpack"):
            raise ConfigurationError(
                f"channel_codec must be 'json' or 'msgpack', not {self.channel_codec!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
                0 <= self.port <= 65535):
            raise ConfigurationError(f"port must be from 0 to 65535, not {self.port!r}")
        _check_counts(self, ("max_pending", "max_connections"), 100_000)
        if self.request_timeout is None:
            raise ConfigurationError("a channel:// transport needs a request_timeout (a "
                                     "client's request must not wait for ever)")

    def to_url(self) -> str:
        query = self._common_query()
        for name, default in (("channel_codec", "json"), ("max_pending", 64),
                              ("max_connections", 256)):
            value = getattr(self, name)
            if value != default:
                query.append((name, _fmt(value)))
        return f"channel://{_host(self.host)}:{self.port}{_query(query)}"


# -- URL parsing --------------------------------------------------------------------------------


def _fmt(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _check_counts(config: BusConfig, names: Sequence[str], most: int) -> None:
    """Each field of *names* must be an integer from 1 to *most* (not a bool)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ConfigurationError(f"{name} must be an integer from 1 to {most}, "
                                     f"not {value!r}")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _query(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "?" + "&".join(f"{k}={quote(v, safe=',/:')}" for k, v in pairs)


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"URL parameter {name}={text!r} is not a boolean")


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"URL parameter {name}={text!r} is not an integer") from None


def _parse_timeout(name: str, text: str) -> float | None:
    if text.lower() in ("none", "", "inf", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"URL parameter {name}={text!r} is not a number") from None
    return None if math.isinf(value) else value


def _text(name: str, text: str) -> str:
    return text


def _topics(name: str, text: str) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t)


_COMMON: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "codec": ("codec", _text),
    "max_queue": ("max_queue", _parse_int),
    "request_timeout": ("request_timeout", _parse_timeout),
    "client_name": ("client_name", _text),
    "topics": ("default_subscription_topics", _topics),
}

_PARAMS: dict[str, dict[str, tuple[str, Callable[[str, str], Any]]]] = {
    "memory": {"overflow": ("overflow", _text)},
    "mqtt": {
        "client_id": ("client_id", _text),
        "qos": ("qos", _parse_int),
        "keepalive": ("keepalive", _parse_int),
        "clean_start": ("clean_start", _parse_bool),
        "clean_session": ("clean_start", _parse_bool),
        "tls": ("tls", _parse_bool),
        "version": ("version", _text),
        "v": ("version", _text),
        "allow_insecure_auth": ("allow_insecure_auth", _parse_bool),
    },
    "channel": {
        "channel_codec": ("channel_codec", _text),
        "max_pending": ("max_pending", _parse_int),
        "max_connections": ("max_connections", _parse_int),
    },
    "kafka": {
        "group": ("group_id", _text),
        "group_id": ("group_id", _text),
        "client_id": ("client_id", _text),
        "offset_reset": ("offset_reset", _text),
        "auto_offset_reset": ("offset_reset", _text),
        "create_topics": ("create_topics", _parse_bool),
        "commit_interval": ("commit_interval", lambda name, text: float(text)),
        "partitions": ("partitions", _parse_int),
        "replication_factor": ("replication_factor", _parse_int),
        "backend": ("backend", _text),
        "tls": ("tls", _parse_bool),
    },
}


def _parse_any(text: str) -> Any:
    """A pass-through option's value: an int, a float, a boolean, ``none``, or the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_url(url: str) -> BusConfig:
    """Parse a broker URL into its configuration.

    ``memory://[name]``, ``mqtt://[user[:password]@]host[:port]``, ``mqtts://...`` (TLS),
    ``kafka://host:port[,host:port...]`` and ``channel://host:port``, each with query
    parameters named after the configuration's fields (``?qos=1&client_id=x``,
    ``?group=g&offset_reset=earliest``; the options of :class:`BusConfig` everywhere:
    ``codec``, ``max_queue``, ``request_timeout``, ``client_name``, ``topics=a,b``).

    Raises:
        ConfigurationError: for an unknown scheme or parameter, or a value of the wrong type.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a broker URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid broker URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    family = "mqtt" if scheme in ("mqtt", "mqtts") else scheme
    if family not in _PARAMS:
        raise ConfigurationError(
            f"unsupported broker URL scheme {parts.scheme!r} in {url!r}; "
            "use memory://, mqtt://, mqtts://, kafka:// or channel://"
        )
    known = {**_COMMON, **_PARAMS[family]}
    values: dict[str, Any] = {}
    passthrough: dict[str, dict[str, Any]] = {"consumer": {}, "producer": {}}
    for key, text in parse_qsl(parts.query, keep_blank_values=True):
        prefix, dot, option = key.partition(".")
        if family == "kafka" and dot and prefix in passthrough and option:
            passthrough[prefix][option] = _parse_any(text)
            continue
        if key not in known:
            raise ConfigurationError(
                f"unknown parameter {key!r} in {scheme}:// URL; known: {', '.join(sorted(known))}"
            )
        attr, convert = known[key]
        try:
            values[attr] = convert(key, text)
        except ConfigurationError:
            raise
        except ValueError:
            raise ConfigurationError(f"URL parameter {key}={text!r} is not valid") from None
    if family == "memory":
        name = unquote(parts.netloc + parts.path.rstrip("/")) or "default"
        return MemoryConfig(name=name, **values)
    if family == "mqtt":
        # the grammar of the MQTT client's URLs (trionet._mqtt_url); the bus knows two schemes
        address = split_mqtt_url(url, schemes=("mqtt", "mqtts"))
        if not address.host:
            raise ConfigurationError(f"no host in MQTT URL {url!r}")
        if address.tls:
            values.setdefault("tls", True)
        return MqttConfig(
            host=address.host,
            port=address.port,
            username=address.username,
            password=address.password,
            **values,
        )
    if family == "channel":
        if parts.path.strip("/"):
            raise ConfigurationError(f"a channel:// URL has no path: {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"invalid port in {url!r}") from None
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError(f"a channel:// URL takes no user or password: {url!r}")
        return ChannelConfig(host=parts.hostname or "127.0.0.1", port=port or 0, **values)
    servers = [s for s in (parts.netloc + parts.path.rstrip("/")).split(",") if s]
    if not servers:
        raise ConfigurationError(f"no bootstrap server in Kafka URL {url!r}")
    return KafkaConfig(bootstrap_servers=",".join(servers),
                       consumer_config=passthrough["consumer"],
                       producer_config=passthrough["producer"], **values)
