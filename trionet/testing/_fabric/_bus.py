"""``TestBus``: run a ``DistributedApplication`` on in-memory brokers, unchanged."""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Self

import trio

from ..._util import EnterOnce, reraise_single
from ...bus._app import ApplicationSpec, DistributedApplication
from ...bus._config import BusConfig, KafkaConfig, MemoryConfig, MqttConfig, Topics, parse_url
from ...bus._memory import MemorySocketProvider
from ...bus._message import BusMessage, _encode_envelope
from ...bus._middleware import Middleware
from ...bus._payload import to_message
from ...bus._providers import SocketProviderFactory
from ...bus._socket import BusSocket, ProviderSpec, SocketProvider
from ...bus._topics import check_topic
from ...errors import ConfigurationError
from ._broker import FabricBroker, FabricProvider
from ._faults import Faults, Item
from ._kafka import KafkaFabric
from ._mqtt import MqttFabric

__all__ = ["Fabric", "HandledMessage", "TestBus"]

_ids = itertools.count(1)
#: How many handled messages a TestBus remembers per application.
_HANDLED = 10_000


@dataclass(frozen=True, slots=True)
class HandledMessage:
    """One message an application's handler was given (what :meth:`TestBus.handled` lists).

    Attributes:
        message: the message.
        result: what the handler returned (what publishers publish), or ``None``.
        error: what it raised (an :exc:`~trionet.bus.InvalidPayload` for a payload that did
            not decode: the handler was not called), or ``None``.
    """

    message: BusMessage
    result: Any = None
    error: Exception | None = None


class _Recorder(Middleware):
    """The innermost consume middleware of an application under a TestBus."""

    def __init__(self) -> None:
        self.handled: collections.deque[HandledMessage] = collections.deque(maxlen=_HANDLED)

    async def consume_scope(self, call_next: Callable[[BusMessage], Awaitable[Any]],
                            message: BusMessage) -> Any:
        try:
            result = await call_next(message)
        except Exception as exc:
            self.handled.append(HandledMessage(message, error=exc))
            raise
        self.handled.append(HandledMessage(message, result))
        return result


class Fabric:
    """The in-memory brokers of a test, one per broker an application names.

    ``mqtt://host:port`` URLs that name the same host and port get the same :class:`MqttFabric`
    (whatever their options), ``kafka://`` URLs with the same servers the same
    :class:`KafkaFabric`, ``memory://name`` the same ``memory://`` fabric. Share one
    ``Fabric`` between several :class:`TestBus` blocks to keep the brokers' state (retained
    messages, sessions, records, committed offsets) from one to the next, as a real broker
    would across restarts of the application.

    Args:
        seed: seed of the fault rules' random generator (``None``: random).
        partitions: partitions of Kafka topics made on first use (see :class:`KafkaFabric`).

    Attributes:
        faults: the :class:`Faults` rules of every broker of the fabric.
    """

    def __init__(self, *, seed: int | None = None,
                 partitions: int | Mapping[str, int] = 1) -> None:
        self.faults = Faults(seed)
        self.partitions = partitions
        self._brokers: dict[tuple[str, str], FabricBroker] = {}
        self._activity_brokers: list[FabricBroker] = []
        #: Where the brokers run delayed deliveries (the innermost running TestBus's).
        self._nurseries: list[trio.Nursery] = []

    @property
    def brokers(self) -> tuple[FabricBroker, ...]:
        """The brokers made so far."""
        return tuple(self._brokers.values())

    def broker(self, spec: ProviderSpec | None = None) -> FabricBroker:
        """The fabric broker standing for *spec*: a URL, a configuration or a provider
        (``None``: ``memory://``).

        Raises:
            ConfigurationError: for a provider the fabric cannot stand in for.
        """
        if isinstance(spec, FabricProvider):
            return spec.broker
        if isinstance(spec, MemorySocketProvider):
            spec = spec.config.replace(name=spec.broker.name)
        elif isinstance(spec, SocketProvider):
            spec = spec.config
        config = parse_url(spec) if isinstance(spec, str) else spec
        if config is None:
            config = MemoryConfig()
        key = self._key(config)
        broker = self._brokers.get(key)
        if broker is None:
            broker = self._make(key)
            self._brokers[key] = broker
        return broker

    @staticmethod
    def _key(config: BusConfig) -> tuple[str, str]:
        if isinstance(config, MemoryConfig):
            return ("memory", config.name)
        if isinstance(config, MqttConfig):
            return ("mqtt", f"{config.host}:{config.effective_port}")
        if isinstance(config, KafkaConfig):
            return ("kafka", ",".join(sorted(config.servers)))
        raise ConfigurationError(f"the test fabric has no broker for a {type(config).__name__}")

    def _make(self, key: tuple[str, str]) -> FabricBroker:
        kind, name = key
        broker: FabricBroker
        if kind == "kafka":
            broker = KafkaFabric(name, partitions=self.partitions, faults=self.faults)
        else:
            broker = MqttFabric(name, memory=kind == "memory", faults=self.faults)
        broker._nurseries = self._nurseries
        if self._activity_brokers:
            broker.activity = self._activity_brokers[0].activity
        self._activity_brokers.append(broker)
        return broker

    def provider(self, spec: ProviderSpec | None = None) -> FabricProvider:
        """A provider of fabric sockets for *spec* (a URL, configuration or provider)."""
        if isinstance(spec, FabricProvider):
            return spec
        config: BusConfig
        if isinstance(spec, SocketProvider):
            config = spec.config
        elif isinstance(spec, str):
            config = parse_url(spec)
        else:
            config = spec if spec is not None else MemoryConfig()
        return FabricProvider(config, self.broker(spec))

    @contextmanager
    def intercept(self) -> Iterator[Self]:
        """Within the block, every provider made from a URL or a configuration
        (:func:`~trionet.bus.from_url`, :func:`~trionet.bus.from_config`,
        ``DistributedApplication("mqtt://...")``, a decorator's ``socket_provider=``) is a
        provider of this fabric, in every task of the process: sockets that code under test
        makes itself go to the fabric too. Providers made before the block are not changed
        (:class:`TestBus` swaps an application's). Blocks of one fabric may nest; do not
        overlap blocks of different fabrics."""
        factory = SocketProviderFactory
        original = factory.__dict__["from_config"]

        def from_config(config: BusConfig | SocketProvider | str) -> SocketProvider:
            if isinstance(config, SocketProvider):
                return config
            return self.provider(config)

        factory.from_config = staticmethod(from_config)  # type: ignore[method-assign]
        try:
            yield self
        finally:
            factory.from_config = original  # type: ignore[method-assign]

    async def drain(self) -> None:
        """Wait until every message delivered so far has been acknowledged (handled, for an
        application), nothing is queued for a connected subscriber and no delayed message is
        pending. Messages held by a reorder rule do not count. Use a deadline
        (:func:`trio.fail_after`) when a handler may never finish."""
        from trio.testing import wait_all_tasks_blocked  # imports pytest: only when used

        while True:
            await wait_all_tasks_blocked()
            if all(broker._idle() for broker in self._brokers.values()):
                return
            brokers = list(self._brokers.values())
            if not brokers:  # pragma: no cover - idle above
                return
            await brokers[0].activity.wait()


class TestBus(EnterOnce):
    """Run applications in memory, unchanged: FastStream's ``TestBroker(app)`` for trionet.

    ``async with TestBus(app) as bus:`` puts fabric brokers in place of every broker *app*
    would use (its default and each application's own, whether given as ``memory://``,
    ``mqtt://`` or ``kafka://`` URLs, configurations or providers), runs the application until
    the block ends, and puts the original providers back. Each fabric broker has the semantics
    of its scheme (:class:`MqttFabric`, :class:`KafkaFabric`) and the fabric's fault rules
    (:attr:`faults`). Inside the block the test publishes, asks, inspects what was published,
    injects faults, cuts connections and restarts brokers::

        async with TestBus(app) as bus:
            reply = await bus.request(BusMessage(b"trio", "greetings/en"))
            assert reply.payload == b"hello trio"

    Args:
        apps: the applications to run (none: only the fabric, for sockets of the test's own).
        fabric: the :class:`Fabric` to use (share one between blocks to keep broker state);
            a new one by default.
        seed: seed of a new fabric's fault generator.
        partitions: partitions of a new fabric's Kafka topics.
        run: run the applications (``False``: only swap their brokers; the test runs them).

    An application that fails ends the block with its exception. Leaving the block stops the
    applications gracefully (their ``shutdown_timeout`` applies).
    """

    __test__ = False  # not a pytest test class
    _entered_twice = RuntimeError

    def __init__(self, *apps: DistributedApplication, fabric: Fabric | None = None,
                 seed: int | None = None, partitions: int | Mapping[str, int] = 1,
                 run: bool = True) -> None:
        for app in apps:
            if not isinstance(app, DistributedApplication):
                raise TypeError(f"TestBus runs DistributedApplications, not {type(app).__name__}")
        if fabric is not None and (seed is not None or partitions != 1):
            raise ConfigurationError("give seed= and partitions= to the Fabric, not the TestBus")
        self.apps = apps
        self.fabric = fabric if fabric is not None else Fabric(seed=seed, partitions=partitions)
        self._run = run
        self._sockets: dict[int, BusSocket] = {}
        self._clients: trio.Nursery | None = None
        self._recorders: dict[str, _Recorder] = {}

    @property
    def faults(self) -> Faults:
        """The fabric's fault rules (:class:`Faults`)."""
        return self.fabric.faults

    # -- lifetime -------------------------------------------------------------------------------

    def _swap(self) -> list[tuple[DistributedApplication, Any, list[Any]]]:
        saved = []
        for app in self.apps:
            original_default = app.default_socket_provider
            original_specs = list(app.applications)
            saved.append((app, original_default, original_specs))
            default = self.fabric.provider(original_default)
            app.default_socket_provider = default
            app.applications[:] = [self._swapped(spec) for spec in original_specs]
        return saved

    def _swapped(self, spec: ApplicationSpec) -> ApplicationSpec:
        changes: dict[str, Any] = {}
        if spec.socket_provider is not None:
            changes["socket_provider"] = self.fabric.provider(spec.socket_provider)
        if spec.kind == "consumer":
            recorder = self._recorders[spec.name] = _Recorder()
            changes["middleware"] = (*spec.middleware, recorder)
        return dataclasses.replace(spec, **changes) if changes else spec

    @staticmethod
    def _restore(saved: list[tuple[DistributedApplication, Any, list[Any]]]) -> None:
        for app, default, specs in saved:
            app.default_socket_provider = default
            app.applications[:] = specs

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        saved = self._swap()
        nurseries = self.fabric._nurseries
        try:
            async with trio.open_nursery() as delays:
                nurseries.append(delays)
                try:
                    async with trio.open_nursery() as clients:
                        self._clients = clients
                        try:
                            async with trio.open_nursery() as nursery:
                                for app in self.apps if self._run else ():
                                    await nursery.start(app.serve)
                                try:
                                    yield self
                                finally:
                                    for app in self.apps:
                                        app.stop()
                        finally:
                            self._clients = None
                            self._sockets.clear()
                            clients.cancel_scope.cancel()
                finally:
                    nurseries.remove(delays)
                    delays.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            reraise_single(group)
        finally:
            self._restore(saved)

    @staticmethod
    async def _hold(socket: BusSocket, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with socket:
            task_status.started()
            await trio.sleep_forever()

    # -- brokers ----------------------------------------------------------------------------------

    def broker(self, spec: ProviderSpec | None = None) -> FabricBroker:
        """The fabric broker for *spec* (a URL, configuration or provider); by default the
        first application's default broker."""
        if spec is None and self.apps:
            spec = self.apps[0].default_socket_provider
        return self.fabric.broker(spec)

    def socket(self, topics: Topics = None, *, name: str | None = None,
               url: ProviderSpec | None = None) -> BusSocket:
        """A new, unopened socket on the fabric (``async with bus.socket("a/#") as s:``)."""
        provider = self.fabric.provider(url if url is not None else self._default_spec())
        return provider.create_socket(topics, name=name)

    def _default_spec(self) -> ProviderSpec | None:
        if self.apps:
            return self.apps[0].default_socket_provider
        return None

    async def _client(self, url: ProviderSpec | None) -> BusSocket:
        broker = self.broker(url)
        socket = self._sockets.get(id(broker))
        if socket is None:
            if self._clients is None:
                raise RuntimeError("use the TestBus inside its async with block")
            provider = self.fabric.provider(url if url is not None else self._default_spec())
            socket = provider.create_socket(name=f"testbus-{next(_ids)}")
            await self._clients.start(self._hold, socket)
            self._sockets[id(broker)] = socket
        return socket

    # -- publishing -------------------------------------------------------------------------------

    async def publish(self, message: BusMessage | Any, topic: str | None = None, *,
                      key: bytes | str | None = None, retain: bool = False,
                      content_type: str | None = None,
                      headers: Mapping[str, str] | None = None,
                      url: ProviderSpec | None = None) -> None:
        """Publish as an outside client would.

        Args:
            message: a :class:`~trionet.bus.BusMessage`, or any object the bus can encode
                (``bytes``, ``str``, dataclasses, msgspec structs, ...; see
                :func:`~trionet.bus.encode_payload`) to *topic*.
            topic: the topic (default: the message's).
            key: the Kafka record key (the partition follows from it); by default the
                message's :attr:`~trionet.bus.BusMessage.key`. A ``str`` is also the message's
                key when it has none (its ordering key, as when the bus publishes it).
            retain: MQTT's retain flag: the broker keeps the message for later subscribers;
                an empty ``message`` (``b""``) clears the topic's retained message.
            content_type: how to encode an object (``application/msgpack``; JSON by default).
            headers: headers of the message made from an object.
            url: which broker (default: the first application's default).
        """
        if isinstance(message, BusMessage):
            if topic is not None:
                message = message.copy(topic=topic)
        else:
            if topic is None:
                raise ConfigurationError("give a topic with a payload")
            if retain and message in (b"", ""):
                await self._publish_item(Item(check_topic(topic), b"", retain=True), url)
                return
            message = to_message(message, topic, content_type=content_type, headers=headers)
        if isinstance(key, str) and message.key is None:
            message = message.copy(key=key)  # the ordering key too, as the bus publishes it
        check_topic(message.topic)
        broker = self.broker(url)
        data: bytes | BusMessage
        message_id = message.message_id or f"testbus-{next(_ids)}"
        if isinstance(broker, MqttFabric) and broker.memory:
            data = message.copy(message_id=message_id)
        else:
            data = _encode_envelope(message, "msgpack", message_id)
        if key is None:
            key = message.key  # the message's ordering key is its Kafka record key
        encoded_key = key.encode() if isinstance(key, str) else key
        await self._publish_item(Item(message.topic, data, key=encoded_key, retain=retain), url)

    async def _publish_item(self, item: Item, url: ProviderSpec | None) -> None:
        broker = self.broker(url)
        await broker._up.wait()
        await broker._publish(item)

    async def request(self, message: BusMessage | Any, topic: str | None = None, *,
                      timeout: float | None = 10.0,  # noqa: ASYNC109
                      url: ProviderSpec | None = None) -> BusMessage:
        """Send *message* (a :class:`~trionet.bus.BusMessage`, or an object to *topic*) as a
        request and return the reply (see :meth:`BusSocket.request
        <trionet.bus.BusSocket.request>`; :func:`~trionet.bus.decode_payload` reads a typed
        reply)."""
        if not isinstance(message, BusMessage):
            if topic is None:
                raise ConfigurationError("give a topic with a payload")
            message = to_message(message, topic)
        elif topic is not None:
            message = message.copy(topic=topic)
        socket = await self._client(url)
        return await socket.request(message, timeout=timeout)

    def messages(self, topic: str = "#", *, url: ProviderSpec | None = None) -> list[BusMessage]:
        """What was published to topics matching *topic* on a broker (default: the first
        application's), oldest first, before any fault rule (see
        :meth:`FabricBroker.messages`)."""
        return self.broker(url).messages(topic)

    def handled(self, name: str) -> list[HandledMessage]:
        """The messages the consumer application *name* was given in this block, oldest first,
        with what its handler returned or raised (FastStream's handler ``mock``; the last
        10 000 are kept).

        Raises:
            KeyError: if no consumer of the block's applications has that name.
        """
        return list(self._recorders[name].handled)

    async def drain(self) -> None:
        """Wait until what was published so far has been handled (see :meth:`Fabric.drain`)."""
        await self.fabric.drain()

    # -- faults -----------------------------------------------------------------------------------

    def disconnect(self, client: str, *, url: ProviderSpec | None = None) -> int:
        """Cut the connection(s) of *client* (an application's name or a client id) to a broker;
        it reconnects at once. MQTT: a persistent session (``clean_start=false``) gets its
        unacknowledged messages again; Kafka: the member reads again from its group's committed
        offsets. Returns how many connections were cut."""
        return self.broker(url).disconnect(client)

    async def restart(self, *, url: ProviderSpec | None = None) -> None:
        """Restart a broker (see :meth:`FabricBroker.down`)."""
        await self.broker(url).restart()

    def down(self, *, url: ProviderSpec | None = None) -> Any:
        """``async with bus.down():`` the broker is down for the block (see
        :meth:`FabricBroker.down`)."""
        return self.broker(url).down()

    def __repr__(self) -> str:
        names = ", ".join(spec.name for app in self.apps for spec in app.applications)
        return f"<TestBus [{names}] on {list(self.fabric.brokers)!r}>"
