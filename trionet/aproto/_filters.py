"""Filters: pure predicates over a (client, packet) pair that decide whether a handler runs.

Every filter has ``check(client, packet) -> bool``. Filters compose: ``a & b`` passes when both
pass, ``a | b`` when either does, ``~a`` when *a* does not. Passing several filters to
``add_handler`` means all of them (``&``).
"""

from __future__ import annotations

import abc
import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ._apikeys import AsyncAPIKeyFactory
from ._peer import IPAddress, Peer

if TYPE_CHECKING:
    from ._apikeys import APIKeyFactory
    from ._packet import Packet

__all__ = ["AsyncFilter", "Filter", "Filters", "IPAddress", "normalize_ip"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_ip(address: str | IPAddress) -> IPAddress:
    """Parse an IP address; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) becomes IPv4.

    Raises:
        ValueError: *address* is not an IP address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Filter(abc.ABC):
    """The base of all filters.

    Subclasses implement :meth:`check`. It runs on the server's task for every packet that
    reaches the handler, so it must be quick and must not block. A filter that has to wait
    (a key store across the network) is an :class:`AsyncFilter`.
    """

    #: True when the filter (or one it is composed of) must be awaited: :meth:`check_async`.
    is_async: bool = False

    @abc.abstractmethod
    def check(self, client: Peer, packet: Packet) -> bool:
        """Return True if the handler should run for this client and packet."""

    async def check_async(self, client: Peer, packet: Packet) -> bool:
        """The same answer, awaited (the server calls this for handlers with async filters)."""
        return self.check(client, packet)

    def __and__(self, other: Filter) -> Filter:
        return _All(self, _as_filter(other))

    def __or__(self, other: Filter) -> Filter:
        return _Any(self, _as_filter(other))

    def __invert__(self) -> Filter:
        return _Not(self)


class AsyncFilter(Filter):
    """A filter that awaits something: subclasses implement :meth:`check_async`.

    The server awaits it on the connection's task (so a slow check delays only that
    connection's packets); it cannot be used where a plain answer is needed (:meth:`check`
    raises ``TypeError``). Composing it with ``&``, ``|`` and ``~`` works as for any filter.
    """

    is_async = True

    def check(self, client: Peer, packet: Packet) -> bool:
        raise TypeError(f"{type(self).__name__} is asynchronous: await check_async()")

    @abc.abstractmethod
    async def check_async(self, client: Peer, packet: Packet) -> bool:
        """Return True if the handler should run for this client and packet."""


def _as_filter(value: object) -> Filter:
    if not isinstance(value, Filter):
        raise TypeError(f"filters compose only with filters, not {type(value).__name__}")
    return value


class _All(Filter):
    __slots__ = ("filters", "is_async")

    def __init__(self, *filters: Filter) -> None:
        self.filters = filters
        self.is_async = any(f.is_async for f in filters)

    def check(self, client: Peer, packet: Packet) -> bool:
        return all(f.check(client, packet) for f in self.filters)

    async def check_async(self, client: Peer, packet: Packet) -> bool:
        for f in self.filters:
            if not await f.check_async(client, packet):
                return False
        return True

    def __repr__(self) -> str:
        return "(" + " & ".join(map(repr, self.filters)) + ")"


class _Any(Filter):
    __slots__ = ("filters", "is_async")

    def __init__(self, *filters: Filter) -> None:
        self.filters = filters
        self.is_async = any(f.is_async for f in filters)

    def check(self, client: Peer, packet: Packet) -> bool:
        return any(f.check(client, packet) for f in self.filters)

    async def check_async(self, client: Peer, packet: Packet) -> bool:
        for f in self.filters:
            if await f.check_async(client, packet):
                return True
        return False

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.filters)) + ")"


class _Not(Filter):
    __slots__ = ("filter", "is_async")

    def __init__(self, inner: Filter) -> None:
        self.filter = inner
        self.is_async = inner.is_async

    def check(self, client: Peer, packet: Packet) -> bool:
        return not self.filter.check(client, packet)

    async def check_async(self, client: Peer, packet: Packet) -> bool:
        return not await self.filter.check_async(client, packet)

    def __repr__(self) -> str:
        return f"~{self.filter!r}"


class _Fields(Filter):
    """Passes when the packet has exactly the given fields, each matching its pattern.

    Each keyword names a field; its value is ``None`` (the field must be present, any value) or
    a regular expression (a string or a compiled pattern) that ``re.match`` must accept on
    ``str(value)``. As in the original, ``re.match`` anchors only at the start: write ``"ping$"``
    to refuse ``"pingpong"``. The packet must have *no other* fields.

    Raises:
        ConfigurationError: a pattern does not compile, or is neither None, str nor a pattern.
    """

    __slots__ = ("_items", "fields")

    def __init__(self, **fields: str | re.Pattern[str] | None) -> None:
        compiled: dict[str, re.Pattern[str] | None] = {}
        for name, pattern in fields.items():
            if pattern is None or isinstance(pattern, re.Pattern):
                compiled[name] = pattern
            elif isinstance(pattern, str):
                try:
                    compiled[name] = re.compile(pattern)
                except re.error as exc:
                    raise ConfigurationError(
                        f"Filters.Fields: invalid regular expression for {name!r}: {exc}"
                    ) from exc
            else:
                raise ConfigurationError(
                    f"Filters.Fields: {name!r} must be None, a regex string or a compiled "
                    f"pattern, not {type(pattern).__name__}"
                )
        self.fields = compiled
        self._items = tuple(compiled.items())

    def check(self, client: Peer, packet: Packet) -> bool:
        payload = packet.fields
        if len(payload) != len(self._items):
            return False
        for name, pattern in self._items:
            if name not in payload:
                return False
            if pattern is not None and pattern.match(str(payload[name])) is None:
                return False
        return True

    def __repr__(self) -> str:
        shown = {k: (None if v is None else v.pattern) for k, v in self.fields.items()}
        return f"Filters.Fields({shown!r})"


class _Ip(Filter):
    """Passes when the client's (peer) IP address is one of the given addresses or networks.

    Accepts IPv4 and IPv6 addresses and CIDR networks (``"10.0.0.0/8"``, ``"fd00::/8"``); an
    IPv4-mapped IPv6 address matches its IPv4 form. The filter is live: :meth:`add`,
    :meth:`remove`, :meth:`discard` and assigning :attr:`ips` change it while the server runs.

    Args:
        ips: one address/network or an iterable of them.

    Raises:
        ConfigurationError: an entry is not a valid address or network (also a ValueError, as
            in the original).
    """

    __slots__ = ("_addresses", "_networks")

    def __init__(self, ips: str | Iterable[str]) -> None:
        self._addresses: set[IPAddress] = set()
        self._networks: set[_Network] = set()
        self.add(*self._entries(ips))

    @staticmethod
    def _entries(ips: str | Iterable[str]) -> list[str]:
        if isinstance(ips, str):
            return [ips]
        try:
            entries = list(ips)
        except TypeError:
            raise ConfigurationError(
                f"Filters.Ip needs an address or a list of addresses, not {type(ips).__name__}"
            ) from None
        return entries

    @staticmethod
    def _parse(entry: object) -> IPAddress | _Network:
        if not isinstance(entry, str):
            raise ConfigurationError(
                f"Filters.Ip: addresses must be strings, not {type(entry).__name__}"
            )
        try:
            if "/" in entry:
                net = ipaddress.ip_network(entry, strict=False)
                if net.num_addresses == 1:
                    return normalize_ip(net.network_address)
                if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
                    mapped = net.network_address.ipv4_mapped
                    return ipaddress.IPv4Network(f"{mapped}/{max(net.prefixlen - 96, 0)}", False)
                return net
            return normalize_ip(entry)
        except ValueError as exc:
            raise ConfigurationError(
                f"Filters.Ip: {entry!r} is not a valid IP address or network"
            ) from exc

    def add(self, *ips: str) -> None:
        """Allow more addresses or networks."""
        parsed = [self._parse(entry) for entry in ips]  # all or nothing
        for item in parsed:
            if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                self._networks.add(item)
            else:
                self._addresses.add(item)

    def remove(self, *ips: str) -> None:
        """Stop allowing these addresses or networks.

        Raises:
            KeyError: an entry is not in the filter (nothing is removed then).
        """
        parsed = [self._parse(entry) for entry in ips]
        for item, entry in zip(parsed, ips, strict=True):
            if item not in self._addresses and item not in self._networks:
                raise KeyError(entry)
        for item in parsed:
            self._addresses.discard(item)
            self._networks.discard(item)

    def discard(self, *ips: str) -> None:
        """Like :meth:`remove`, ignoring entries that are not in the filter."""
        for item in [self._parse(entry) for entry in ips]:
            self._addresses.discard(item)
            self._networks.discard(item)

    @property
    def ips(self) -> frozenset[str]:
        """The allowed addresses and networks, as normalized strings. Assignable."""
        return frozenset(map(str, self._addresses)) | frozenset(map(str, self._networks))

    @ips.setter
    def ips(self, ips: str | Iterable[str]) -> None:
        replacement = _Ip(ips)
        self._addresses = replacement._addresses
        self._networks = replacement._networks

    def __contains__(self, address: object) -> bool:
        if isinstance(address, str):
            try:
                ip = normalize_ip(address)
            except ValueError:
                return False
        elif isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            ip = normalize_ip(address)
        else:
            return False
        if ip in self._addresses:
            return True
        return any(ip in net for net in self._networks)

    def check(self, client: Peer, packet: Packet) -> bool:
        ip = client.ip
        if ip in self._addresses:
            return True
        return bool(self._networks) and any(ip in net for net in self._networks)

    def __repr__(self) -> str:
        return f"Filters.Ip({sorted(self.ips)!r})"


class _APIFactory(Filter):
    """Passes when the packet's *field_name* holds a key that *factory* knows.

    Revoked keys, and keys replaced by :meth:`~APIKeyFactory.reissue`, fail. So does any value
    that cannot be a key, without raising: a missing field, a non-string (number, list, map,
    ...), a string longer than 1024 characters, or one that UTF-8 cannot encode (a lone
    surrogate such as ``"\\ud800"``, valid in JSON). Register a handler without this filter
    after it, in the same group, to answer refused packets.

    With an :class:`AsyncAPIKeyFactory` (keys in an asynchronous store) the filter is
    asynchronous (:class:`AsyncFilter`): the server awaits the check.

    Args:
        factory: an :class:`APIKeyFactory` or :class:`AsyncAPIKeyFactory` (or a subclass).
        field_name: the packet field that carries the key.
    """

    __slots__ = ("factory", "field_name", "is_async")

    def __init__(self, factory: APIKeyFactory | AsyncAPIKeyFactory, field_name: str) -> None:
        if not hasattr(factory, "check"):
            raise ConfigurationError(
                f"Filters.APIFactory needs an APIKeyFactory, not {type(factory).__name__}"
            )
        self.factory = factory
        self.field_name = field_name
        self.is_async = isinstance(factory, AsyncAPIKeyFactory)

    def check(self, client: Peer, packet: Packet) -> bool:
        factory = self.factory
        if isinstance(factory, AsyncAPIKeyFactory):
            raise TypeError("Filters.APIFactory over an AsyncAPIKeyFactory: await check_async()")
        key: Any = packet.fields.get(self.field_name)
        return isinstance(key, str) and factory.check(key)

    async def check_async(self, client: Peer, packet: Packet) -> bool:
        factory = self.factory
        if not isinstance(factory, AsyncAPIKeyFactory):
            return self.check(client, packet)
        key: Any = packet.fields.get(self.field_name)
        return isinstance(key, str) and await factory.check(key)

    def __repr__(self) -> str:
        return f"Filters.APIFactory({self.factory!r}, {self.field_name!r})"


class Filters:
    """The built-in filters, under the original's names.

    * ``Filters.Fields(**fields)``: the packet has exactly these fields, each ``None`` (any
      value) or a regex for ``re.match``.
    * ``Filters.Ip(ips)``: the peer's address is in these IPv4/IPv6 addresses or CIDR networks;
      updatable at runtime.
    * ``Filters.APIFactory(factory, field_name)``: the field holds a valid API key.
    """

    Fields = _Fields
    Ip = _Ip
    APIFactory = _APIFactory

    def __init__(self) -> None:
        raise TypeError("Filters is a namespace; use Filters.Fields, Filters.Ip, ...")


for _cls, _name in ((_Fields, "Fields"), (_Ip, "Ip"), (_APIFactory, "APIFactory")):
    _cls.__name__ = _name
    _cls.__qualname__ = f"Filters.{_name}"
del _cls, _name
