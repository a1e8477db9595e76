"""``kafka://`` URLs: one string naming the brokers, the group, the engine and its options.

Forms::

    kafka://host:9092
    kafka://host1:9092,host2:9092?group=billing&client_id=svc-1&acks=all
    kafka://user:secret@host:9093?sasl_mechanism=SCRAM-SHA-256     (SASL_PLAINTEXT)
    kafka+ssl://host:9093?ssl_cafile=/etc/ca.pem                     (SSL)
    kafka+ssl://user:secret@host:9093                                (SASL_SSL, PLAIN)

Query values that look like integers, decimals or booleans (``true``/``false``) become those
types; everything else stays text. ``group`` is the consumer group (``group_id`` works too);
``backend`` names the engine (``kafka-python``, the default, or another registered one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigurationError

__all__ = ["KafkaURL", "parse_kafka_url"]

_SCHEMES: Final = {"kafka": False, "kafka+ssl": True, "kafkas": True}
_HOST_PORT: Final = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_INT: Final = re.compile(r"^-?\d+$")
_FLOAT: Final = re.compile(r"^-?\d+\.\d*$")


@dataclass(frozen=True)
class KafkaURL:
    """A parsed ``kafka://`` URL."""

    bootstrap_servers: str
    """``"host:port,host:port"``."""
    group_id: str | None = None
    """The ``group`` (or ``group_id``) query option."""
    options: dict[str, Any] = field(default_factory=dict)
    """The engine's options: the other query options, plus the security settings implied by
    the scheme and the user information."""
    backend: str | None = None
    """The ``backend`` query option: the engine's name (None: the default engine)."""

    def client_options(self) -> dict[str, Any]:
        """:attr:`options` plus ``backend`` when the URL names one (for a producer or an admin
        client)."""
        options = dict(self.options)
        if self.backend is not None:
            options["backend"] = self.backend
        return options

    def consumer_options(self) -> dict[str, Any]:
        """:meth:`client_options` plus ``group_id`` when the URL names a group."""
        options = self.client_options()
        if self.group_id is not None:
            options["group_id"] = self.group_id
        return options


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def parse_kafka_url(url: str) -> KafkaURL:
    """Parse a ``kafka://`` (or ``kafka+ssl://``) URL.

    Raises:
        ConfigurationError: not a Kafka URL, no ``host:port``, or a malformed option.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a Kafka URL must be a string, not {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"{url!r} is not a Kafka URL: the scheme must be one of {', '.join(_SCHEMES)}"
        )
    tls = _SCHEMES[scheme]
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, sep, secret = userinfo.partition(":")
        username = unquote(user)
        password = unquote(secret) if sep else ""
        if not username:
            raise ConfigurationError(f"{url!r}: empty user name before '@'")
    if parts.path not in ("", "/"):
        raise ConfigurationError(f"{url!r}: a Kafka URL has no path ({parts.path!r})")
    servers = [item.strip() for item in netloc.split(",")]
    if not netloc or not all(_HOST_PORT.match(item) for item in servers):
        raise ConfigurationError(
            f"{url!r}: expected host:port[,host:port...] after '{scheme}://', got {netloc!r}"
        )
    options: dict[str, Any] = {}
    group_id: str | None = None
    backend: str | None = None
    for key, text in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if not key:
            raise ConfigurationError(f"{url!r}: empty option name in the query")
        if key in ("group", "group_id"):
            if not text:
                raise ConfigurationError(f"{url!r}: the group name is empty")
            group_id = text
        elif key == "backend":
            if not text or backend is not None:
                raise ConfigurationError(f"{url!r}: 'backend' must be given once, not empty")
            backend = text
        elif key in options:
            raise ConfigurationError(f"{url!r}: option {key!r} is given twice")
        else:
            options[key] = _value(text)
    if username is not None:
        options.setdefault("security_protocol", "SASL_SSL" if tls else "SASL_PLAINTEXT")
        options.setdefault("sasl_mechanism", "PLAIN")
        options.setdefault("sasl_plain_username", username)
        options.setdefault("sasl_plain_password", password)
    elif tls:
        options.setdefault("security_protocol", "SSL")
    return KafkaURL(",".join(servers), group_id, options, backend)
