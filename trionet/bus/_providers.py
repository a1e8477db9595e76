"""Which socket provider serves which broker configuration.

The factory lives apart from :mod:`trionet.bus._socket` so that the base classes there never
import the transports built on them (``_memory``, ``_mqtt``, ``_kafka`` import ``_socket``; this
module imports all of them). Each transport is imported only when a configuration asks for it,
so ``memory://`` needs neither paho nor kafka-python.
"""

from __future__ import annotations

from ..errors import ConfigurationError
from ._config import BusConfig, ChannelConfig, KafkaConfig, MemoryConfig, MqttConfig, parse_url
from ._socket import SocketProvider

__all__ = ["SocketProviderFactory", "from_config", "from_url"]


class SocketProviderFactory:
    """Makes providers from configurations or URLs (spa_dat's name)."""

    @staticmethod
    def from_config(config: BusConfig | SocketProvider | str) -> SocketProvider:
        """The provider for a configuration (:class:`MemoryConfig`, :class:`MqttConfig`,
        :class:`KafkaConfig`, :class:`ChannelConfig`), a URL, or a provider (returned as it is).

        Raises:
            ConfigurationError: for anything else.
        """
        if isinstance(config, SocketProvider):
            return config
        if isinstance(config, str):
            config = parse_url(config)
        if isinstance(config, MemoryConfig):
            from ._memory import MemorySocketProvider

            return MemorySocketProvider(config)
        if isinstance(config, MqttConfig):
            from ._mqtt import MqttSocketProvider

            return MqttSocketProvider(config)
        if isinstance(config, KafkaConfig):
            from ._kafka import KafkaSocketProvider

            return KafkaSocketProvider(config)
        if isinstance(config, ChannelConfig):
            from ._channel import ChannelSocketProvider

            return ChannelSocketProvider(config)
        raise ConfigurationError(f"no socket provider for a {type(config).__name__}")

    @staticmethod
    def from_url(url: str) -> SocketProvider:
        """The provider for ``memory://...``, ``mqtt://...``, ``mqtts://...``, ``kafka://...`` or
        ``channel://...``.

        Raises:
            ConfigurationError: for a malformed URL or an unknown scheme or parameter.
        """
        return SocketProviderFactory.from_config(parse_url(url))


def from_url(url: str) -> SocketProvider:
    """Shortcut for :meth:`SocketProviderFactory.from_url`."""
    return SocketProviderFactory.from_url(url)


def from_config(config: BusConfig | SocketProvider | str) -> SocketProvider:
    """Shortcut for :meth:`SocketProviderFactory.from_config`."""
    return SocketProviderFactory.from_config(config)
