"""Small helpers shared by the producer, consumer and admin client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._util import open_hidden_nursery
from ..errors import ConfigurationError

#: The bootstrap timeout trionet gives kafka-python unless told otherwise (kafka-python: 30 s).
DEFAULT_BOOTSTRAP_TIMEOUT_MS: Final = 10_000


def servers_text(servers: str | Sequence[str]) -> str:
    """``"host:port,host:port"`` for messages, whatever form the servers were given in."""
    if isinstance(servers, str):
        return servers
    return ",".join(servers)


def check_servers(servers: object) -> str | list[str]:
    """Validate ``bootstrap_servers``: a non-empty string or sequence of strings.

    Raises:
        ConfigurationError: otherwise.
    """
    if isinstance(servers, str):
        if servers.strip():
            return servers
    elif isinstance(servers, Sequence) and servers and all(
        isinstance(item, str) and item.strip() for item in servers
    ):
        return list(servers)
    raise ConfigurationError(
        f"bootstrap_servers must be 'host:port' or a list of them, not {servers!r}"
    )


def with_defaults(config: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """*config* plus the *defaults* it does not set."""
    merged = dict(defaults)
    merged.update(config)
    return merged


# The hidden nursery every Kafka client's ``async with`` owns: a lone error comes out as itself.
hidden_nursery = open_hidden_nursery
