"""The trio-side options of the Kafka clients, checked once, as frozen dataclasses.

These are trionet's own parameters (every engine honours them); the library's options
(``**config``) are checked by the engine (:meth:`~._engine.Engine.configure`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ConfigurationError
from ..tls import TLSOptions
from ._records import TopicPartition

__all__ = [
    "CLEAR_TEXT_MECHANISMS",
    "ConsumerOptions",
    "ProducerOptions",
    "as_tp",
    "check_credentials",
    "check_offset",
    "check_topic",
    "with_tls",
]

#: How long a read-ahead poll (the application still has records) may wait for the network.
#: Not 0: kafka-python abandons a group join/sync step at every poll that times out, and
#: against noida-db a rebalance driven only by zero-timeout polls was seen to stall.
READ_AHEAD_WAIT_MS: Final = 10


def as_tp(value: tuple[str, int]) -> TopicPartition:
    """A checked ``(topic, partition)`` pair."""
    try:
        topic, partition = value
    except (TypeError, ValueError):
        raise ConfigurationError(f"expected a (topic, partition) pair, not {value!r}") from None
    if not isinstance(topic, str) or not topic:
        raise ConfigurationError(f"topic must be a non-empty string, not {topic!r}")
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise ConfigurationError(f"partition must be an int >= 0, not {partition!r}")
    return TopicPartition(topic, partition)


def check_offset(offset: object) -> int:
    """A checked offset (an int >= 0)."""
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ConfigurationError(f"offset must be an int >= 0, not {offset!r}")
    return offset


def check_topic(topic: object) -> None:
    """Refuse anything but a non-empty topic name."""
    if not isinstance(topic, str) or not topic:
        raise ConfigurationError(f"topic must be a non-empty string, not {topic!r}")


@dataclass(frozen=True)
class ConsumerOptions:
    """A :class:`~trionet.kafka.KafkaConsumer`'s own options (see its docstring)."""

    topics: tuple[str, ...] = ()
    pattern: str | None = None
    partitions: tuple[TopicPartition, ...] | None = None
    group_id: str | None = None
    poll_ms: int = 100
    """Milliseconds each blocking poll may take (``poll_interval``)."""
    close_timeout: float = 10.0
    prefetch: int | None = None
    prefetch_bytes: int = 64 * 1024 * 1024
    decode_in_trio: bool = True
    commit_on_exit: bool = True
    broker_timeout: float | None = 30.0

    @property
    def read_ahead_ms(self) -> int:
        """How long a read-ahead poll may wait for the network."""
        return min(self.poll_ms, READ_AHEAD_WAIT_MS)

    @classmethod
    def build(cls, topics: tuple[str, ...], *, group_id: str | None, pattern: str | None,
              partitions: Iterable[tuple[str, int]] | None, poll_interval: float,
              close_timeout: float, prefetch: int | None, prefetch_bytes: int,
              decode_in_trio: bool, commit_on_exit: bool,
              broker_timeout: float | None) -> ConsumerOptions:
        """Check the arguments of ``KafkaConsumer(...)``.

        Raises:
            ConfigurationError: an invalid value or combination.
        """
        if sum((bool(topics), pattern is not None, partitions is not None)) > 1:
            raise ConfigurationError("give topics, a pattern or partitions, not several")
        if not (isinstance(poll_interval, (int, float)) and 0 < poll_interval <= 60):
            raise ConfigurationError(f"poll_interval must be in (0, 60] s, not {poll_interval!r}")
        if not close_timeout >= 0:
            raise ConfigurationError(f"close_timeout must be >= 0, not {close_timeout!r}")
        if prefetch is not None and (not isinstance(prefetch, int) or isinstance(prefetch, bool)
                                     or prefetch < 0):
            raise ConfigurationError(f"prefetch must be an int >= 0, not {prefetch!r}")
        if not isinstance(decode_in_trio, bool):
            raise ConfigurationError(
                f"decode_in_trio must be True or False, not {decode_in_trio!r}")
        if broker_timeout is not None and not broker_timeout > 0:
            raise ConfigurationError(f"broker_timeout must be > 0 or None, not {broker_timeout!r}")
        for topic in topics:
            check_topic(topic)
        assigned = None if partitions is None else tuple(as_tp(tp) for tp in partitions)
        if not (isinstance(prefetch_bytes, int) and prefetch_bytes > 0):
            raise ConfigurationError(
                f"prefetch_bytes must be a positive int, not {prefetch_bytes!r}")
        return cls(tuple(topics), pattern, assigned, group_id,
                   max(1, round(poll_interval * 1000)), close_timeout, prefetch, prefetch_bytes,
                   decode_in_trio, commit_on_exit, broker_timeout)


@dataclass(frozen=True)
class ProducerOptions:
    """A :class:`~trionet.kafka.KafkaProducer`'s own options (see its docstring)."""

    max_pending: int = 100_000
    close_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_pending, int) or self.max_pending < 1:
            raise ConfigurationError(
                f"max_pending must be a positive int, not {self.max_pending!r}")
        if not self.close_timeout >= 0:
            raise ConfigurationError(f"close_timeout must be >= 0, not {self.close_timeout!r}")


#: SASL mechanisms that put the secret itself on the wire (SCRAM and GSSAPI do not).
CLEAR_TEXT_MECHANISMS = frozenset({"PLAIN", "OAUTHBEARER"})


def check_credentials(options: Mapping[str, Any]) -> None:
    """Refuse to send a password or token over a connection without TLS, unless asked to.

    ``security_protocol="SASL_PLAINTEXT"`` with the PLAIN mechanism sends the password as it
    is, and OAUTHBEARER the token: anyone on the path reads it. ``allow_insecure_auth=True``
    (a trionet option, not passed to the engine's library) allows it, for a broker on loopback.

    Raises:
        ConfigurationError: the options would send a secret in clear.
    """
    allowed = options.get("allow_insecure_auth", False)
    if not isinstance(allowed, bool):
        raise ConfigurationError(f"allow_insecure_auth must be True or False, not {allowed!r}")
    # trionet's option names, or librdkafka's (the confluent engine takes both)
    protocol = str(options.get("security_protocol", options.get("security.protocol",
                                                                "PLAINTEXT"))).upper()
    mechanism = str(options.get("sasl_mechanism", options.get(
        "sasl.mechanism", options.get("sasl.mechanisms", "PLAIN")))).upper()
    if protocol == "SASL_PLAINTEXT" and mechanism in CLEAR_TEXT_MECHANISMS and not allowed:
        raise ConfigurationError(
            f"refusing to send Kafka SASL {mechanism} credentials over a connection without "
            "TLS (security_protocol='SASL_PLAINTEXT'): anyone on the path could read them. "
            "Use security_protocol='SASL_SSL' (kafka+ssl:// in a URL), a SCRAM mechanism, or "
            "pass allow_insecure_auth=True (?allow_insecure_auth=true) for a trusted network"
        )


def with_tls(config: Mapping[str, Any]) -> dict[str, Any]:
    """*config* with its ``tls=`` (the :mod:`trionet.tls` vocabulary) turned into the engine's
    ``security_protocol`` and ``ssl_*`` options (kafka-python's names, which the confluent
    engine maps to librdkafka's).

    ``True`` and a :class:`~trionet.tls.TLSOptions` verify the broker (the libraries' default
    with TLS on); an :class:`ssl.SSLContext` becomes kafka-python's ``ssl_context``.

    Raises:
        ConfigurationError: ``tls`` is of another kind, or ``security_protocol`` says no TLS.
    """
    options = dict(config)
    tls = options.pop("tls", None)
    if tls is None or tls is False:
        return options
    if not isinstance(tls, (bool, ssl.SSLContext, TLSOptions)):
        raise ConfigurationError(f"tls must be True, False, None, an ssl.SSLContext or a "
                                 f"trionet.tls.TLSOptions, not {type(tls).__name__}")
    sasl = "sasl_mechanism" in options or "sasl_plain_username" in options
    protocol = str(options.get("security_protocol", "SASL_SSL" if sasl else "SSL")).upper()
    if protocol not in ("SSL", "SASL_SSL"):
        raise ConfigurationError(f"tls= asks for TLS but security_protocol is {protocol!r}")
    options["security_protocol"] = protocol
    if isinstance(tls, ssl.SSLContext):
        options["ssl_context"] = tls
    elif isinstance(tls, TLSOptions):
        if tls.cert_file is None and (tls.key_file is not None or tls.key_password):
            raise ConfigurationError("key_file and key_password need a cert_file")
        for name, value in (("ssl_cafile", tls.ca_file), ("ssl_certfile", tls.cert_file),
                            ("ssl_keyfile", tls.key_file), ("ssl_password", tls.key_password)):
            if value is not None:
                options[name] = os.fspath(value)
    return options
