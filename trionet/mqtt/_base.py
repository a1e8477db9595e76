"""What the parts of :class:`~trionet.mqtt.MQTTClient` share: its state, and the helpers that
hand engine calls to the driver and wait for a usable connection.

The client is cut along its concerns, one module each, all on this base: connecting
(:mod:`._connection`), reconnecting (:mod:`._reconnecting`), publishing (:mod:`._publishing`),
subscriptions and ``on_message`` handlers (:mod:`._subscribing`), request/response
(:mod:`._request`), and the life cycle and event pump (:mod:`._client`). The synchronous cores
they drive have no trio task and no socket: routing (:mod:`._router`), flow control
(:mod:`._flow`), pending replies (:mod:`._replies`), options (:mod:`._options`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import trio

from .._extras import missing_extra
from ..errors import ConfigurationError, MQTTNotConnected
from ._errors import MQTTSubscribeError
from ._events import Connack, ConnectFailed
from ._flow import FlowControl
from ._message import BrokerLimits, ConnectionEvent, ConnectionState, MQTTMessage, QoS
from ._options import ClientOptions, EngineSettings
from ._replies import Replies
from ._router import Route, Router
from ._subscription import ConnectionEvents, _Box

if TYPE_CHECKING:
    from ._driver import Driver
    from ._paho import PahoEngine

_log = logging.getLogger("trionet.mqtt")

#: An ``on_message`` handler: an async function taking the message.
MessageHandler = Callable[[MQTTMessage], Awaitable[object]]


def load_paho() -> ModuleType:
    """:mod:`trionet.mqtt._paho`, imported on first use: ``import trionet.mqtt`` loads no paho."""
    try:
        from . import _paho
    except ImportError as error:
        raise missing_extra("trionet.mqtt", "paho-mqtt", error) from error
    return _paho


def load_drivers() -> ModuleType:
    """:mod:`trionet.mqtt._driver` (and paho with it), imported when a client starts."""
    load_paho()
    from . import _driver

    return _driver


class ClientBase:
    """The state of one client (set by ``MQTTClient.__init__``) and the shared helpers."""

    _options: ClientOptions
    _settings: EngineSettings
    _client_id: str
    _protocol: int
    _v5: bool
    _flow: FlowControl
    _router: Router
    _replies: Replies
    _handlers: list[tuple[str | None, MessageHandler]]
    _event_streams: list[ConnectionEvents]
    _state: ConnectionState
    _state_changed: trio.Event
    _running: bool
    _closing: bool
    _host: str
    _port: int
    _attempt: int
    _connect_boxes: dict[int, _Box[Connack | ConnectFailed]]
    _limits: BrokerLimits
    #: False for a client that a higher layer traces itself (the bus's)
    _traced: bool = True
    _backoff: int
    _connected_at: float
    _lost: trio.Event
    _lost_while_connecting: bool
    _lost_code: int | None
    _fatal: BaseException | None
    _qos0_credit: trio.Semaphore
    _reauth_lock: trio.Lock
    _handlers_done: trio.Event
    _published: int
    _handler_errors: int
    _reconnects: int
    _driver: Driver | None
    _engine: PahoEngine | None

    def _current_state(self) -> ConnectionState:
        # (a method, so that type checkers do not narrow self._state across awaits)
        return self._state

    def _engine_or_fail(self) -> PahoEngine:
        if self._engine is None or not self._running or self._closing:
            raise MQTTNotConnected(
                "the MQTT client is not running; use it inside 'async with client:'"
            )
        return self._engine

    def _submit(self, fn: Callable[..., object], *args: Any) -> None:
        driver = self._driver
        if driver is None or not self._running:
            raise MQTTNotConnected(
                "the MQTT client is not running; use it inside 'async with client:'"
            )
        try:
            driver.submit(fn, *args)
        except trio.ClosedResourceError:
            raise MQTTNotConnected("the MQTT client is closed") from None

    def _submit_quiet(self, fn: Callable[..., object], *args: Any) -> bool:
        driver = self._driver
        if driver is None:
            return False
        try:
            driver.submit(fn, *args)
        except trio.ClosedResourceError:
            return False
        return True

    def _set_state(
        self,
        state: ConnectionState,
        *,
        reason_code: int | None = None,
        reason: str = "",
        session_present: bool | None = None,
        attempt: int = 0,
    ) -> None:
        self._state = state
        if state is ConnectionState.CONNECTED:
            self._connected_at = trio.current_time()
        event = ConnectionEvent(state, reason_code, reason, session_present, attempt)
        for stream in self._event_streams:
            stream._push(event)
        self._state_changed.set()
        self._state_changed = trio.Event()

    async def _ready(self, *, queue_while_reconnecting: bool) -> None:
        """Wait for a usable connection; raise if there is none to wait for."""
        while True:
            state = self._state
            if state is ConnectionState.CONNECTED:
                return
            if state is ConnectionState.RECONNECTING:
                if queue_while_reconnecting:
                    return
            elif state is not ConnectionState.CONNECTING:
                if not self._running:
                    raise MQTTNotConnected(
                        "the MQTT client is not running; use it inside 'async with client:'"
                    )
                raise MQTTNotConnected()
            await self._state_changed.wait()

    async def _broker_subscribe(self, route: Route, qos: QoS, no_local: bool,
                                retain_as_published: bool, retain_handling: int) -> QoS:
        engine = self._engine_or_fail()
        if self._state is not ConnectionState.CONNECTED:
            await self._ready(queue_while_reconnecting=True)
        route.qos = max(route.qos, qos)
        route.no_local = no_local
        route.retain_as_published = retain_as_published
        route.retain_handling = retain_handling
        box: _Box[tuple[int, str]] = _Box()
        self._submit(engine.subscribe, [box], route.topic_filter, int(route.qos), no_local,
                     retain_as_published, retain_handling, route.sub_id)
        answer = await box.wait()
        assert answer is not None
        code, reason = answer
        if code >= 0x80:
            raise MQTTSubscribeError(route.topic_filter, code, reason)
        return QoS(min(code, 2))

    def _unsubscribe_soon(self, route: Route) -> None:
        """Drop an unused route and tell the broker, without waiting for the UNSUBACK."""
        if self._router.drop_if_unused(route) and self._engine is not None and not self._closing:
            self._submit_quiet(self._engine.unsubscribe, _Box(), route.topic_filter)

    def _check_v5_options(self, no_local: bool, retain_as_published: bool,
                          retain_handling: int) -> None:
        if retain_handling not in (0, 1, 2):
            raise ConfigurationError("retain_handling must be 0, 1 or 2")
        if not self._v5 and (no_local or retain_as_published or retain_handling):
            raise ConfigurationError(
                "no_local, retain_as_published and retain_handling need MQTT 5 (protocol=5)"
            )
