"""One handler, several transports: the same bus consumer reachable over MQTT and Kafka (and
``memory://``) with one declaration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..bus import BusConfig, DistributedApplication, SocketProvider, from_config
from ..errors import ConfigurationError

__all__ = ["on_transports"]

CallbackT = TypeVar("CallbackT", bound=Callable[..., Any])


def on_transports(
    app: DistributedApplication,
    topics: str | Sequence[str],
    brokers: Sequence[SocketProvider | BusConfig | str],
    *,
    name: str | None = None,
    **options: Any,
) -> Callable[[CallbackT], CallbackT]:
    """Decorator: one consumer of *app*, subscribed to *topics* on every broker of *brokers*::

        @on_transports(app, "orders/new", ["mqtt://127.0.0.1:1883", "kafka://127.0.0.1:9092",
                                           "channel://127.0.0.1:5555"])
        async def orders(message, socket):
            await socket.reply(message, b"accepted")

    Each broker gets its own application (``<name>@<scheme>``: ``orders@mqtt``,
    ``orders@kafka``, ``orders@channel``, a listener for :mod:`trionet.channel` clients (see
    :class:`~trionet.bus.ChannelConfig`); ``orders@mqtt-2`` for a second MQTT broker) with its
    own socket, so a request is answered on the transport it came from, each transport is
    acknowledged, restarted and counted (``app.statistics``) on its own, and one broker going
    away does not stop the others' consumers unless the options say so (``on_error``,
    ``restart``). The callback itself is registered unchanged and returned.

    Args:
        app: the application to register with.
        topics: the topic filter(s), the same on every broker.
        brokers: broker URLs, configurations or socket providers (at least one).
        name: the base of the applications' names (default: the callback's name).
        **options: the other arguments of :meth:`DistributedApplication.application
            <trionet.bus.DistributedApplication.application>` (``max_concurrency``, ``ack``,
            ``on_error``, ``restart``, ``state``, ``resources``...), the same for every broker.

    Raises:
        ConfigurationError: no broker, or a bad URL.
    """
    if isinstance(brokers, str):
        raise ConfigurationError("brokers must be a sequence of broker URLs, not one string")
    providers = [from_config(broker) for broker in brokers]
    if not providers:
        raise ConfigurationError("on_transports needs at least one broker")
    schemes = [provider.config.scheme for provider in providers]
    counts = Counter(schemes)
    if "socket_provider" in options:
        raise ConfigurationError("on_transports takes the brokers, not socket_provider=")

    def register(callback: CallbackT) -> CallbackT:
        base = name or getattr(callback, "__name__", "handler")
        seen: Counter[str] = Counter()
        for provider, scheme in zip(providers, schemes, strict=True):
            seen[scheme] += 1
            label = f"{base}@{scheme}"
            if counts[scheme] > 1 and seen[scheme] > 1:
                label += f"-{seen[scheme]}"
            app.application(topics, socket_provider=provider, name=label, **options)(callback)
        return callback

    return register
