"""The MQTT client: trio tasks on one side, paho-mqtt (driven by :mod:`._driver`) on the other.

Shape of one client (everything lives in the nursery its ``async with`` opens)::

    trio tasks ── driver.submit(engine.method, ...) ──►  PahoEngine: paho client, socket,
       ▲          (publish, ack: driver.try_direct)      keepalive, in-flight window
       │                                                 (on a LoopThread, or on the trio
       │          batches of events                      thread with backend="trio")
       └──────────────────────────────────────────────────┘
    _on_events (trio thread): resolve waiters, route messages into bounded buffers, ack

    background tasks: _supervise (reconnect with backoff), _dispatch_handlers (on_message)

Nothing here calls paho directly; :mod:`trionet.mqtt._paho` is the only module that does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import ssl
import string
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import trio

from .._extras import missing_extra
from .._topics import filter_matcher
from .._util import single_exception
from ..errors import (
    ConfigurationError,
    MQTTConnectError,
    MQTTError,
    MQTTNotConnected,
    MQTTTimeout,
)
from ._errors import (
    SESSION_TAKEN_OVER,
    MQTTPublishError,
    MQTTSessionTakenOver,
    MQTTSubscribeError,
)
from ._events import (
    Acked,
    AckedMany,
    AckToken,
    Connack,
    ConnectFailed,
    Credit,
    Done,
    Event,
    Failed,
    Lost,
    Messages,
    NotSent,
    ResubscribeFailed,
    SubAck,
    UnsubAck,
)
from ._limits import limit_violation
from ._message import (
    MAX_PACKET_SIZE,
    MQTTV5,
    MQTTV311,
    BrokerLimits,
    ConnectionEvent,
    ConnectionState,
    MessageProperties,
    MQTTMessage,
    MQTTStatistics,
    Payload,
    QoS,
    Will,
    pack_reply_envelope,
    pack_request_envelope,
    to_payload,
    to_qos,
)
from ._options import EngineSettings, MQTTClientOptions
from ._reconnect import ReconnectPolicy
from ._subscription import ConnectionEvents, Subscription, _Box, _Delivery
from ._topics import TopicMatcher, parse_filter, topic_matches, validate_topic
from ._url import parse_mqtt_url

if TYPE_CHECKING:
    from typing import Self, Unpack

    from ._driver import Driver
    from ._paho import PahoEngine

__all__ = ["MQTTClient", "MessageHandler", "open_mqtt_client"]

_log = logging.getLogger("trionet.mqtt")

#: An ``on_message`` handler: an async function taking the message.
MessageHandler = Callable[[MQTTMessage], Awaitable[object]]

_ID_ALPHABET = string.ascii_letters + string.digits
_QOS0_CREDIT = 1024
_BATCH = 256
_BATCHES_IN_FLIGHT = 4


_MAX_SUB_ID = 268_435_455  # MQTT 5 §3.8.2.1.2: a variable byte integer, 1 to 268,435,455


def subscription_identifier(topic_filter: str) -> int:
    """The MQTT 5 subscription identifier trionet gives *topic_filter* (1 to 268,435,455).

    Derived from the filter alone (BLAKE2b), so the same filter gets the same identifier in
    every run: a client that resumes a persistent session does not hand an identifier the
    broker still uses for another filter to a new one (except by a 1 in 2^28 chance, which the
    topic check in the routing makes harmless).
    """
    digest = hashlib.blake2b(topic_filter.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _MAX_SUB_ID + 1


def default_client_id() -> str:
    """A random client id every MQTT broker must accept: ``trionet`` and 16 letters and digits.

    MQTT 3.1.1 §3.1.3.1 obliges brokers to accept 1 to 23 characters of ``[0-9a-zA-Z]`` only;
    16 characters from 62 give about 95 random bits.
    """
    return "trionet" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def _nothing() -> None:
    pass


def _load_paho() -> ModuleType:
    """:mod:`trionet.mqtt._paho`, imported on first use: ``import trionet.mqtt`` loads no paho."""
    try:
        from . import _paho
    except ImportError as error:
        raise missing_extra("trionet.mqtt", "paho-mqtt", error) from error
    return _paho


def _load_drivers() -> ModuleType:
    _load_paho()
    from . import _driver

    return _driver


class _Route:
    """One broker subscription (one topic filter) and the local consumers of its messages."""

    __slots__ = (
        "handler_refs",
        "mailboxes",
        "matches",
        "no_local",
        "qos",
        "replies",
        "retain_as_published",
        "retain_handling",
        "sub_id",
        "topic_filter",
    )

    def __init__(self, topic_filter: str, sub_id: int | None) -> None:
        self.topic_filter = topic_filter
        self.sub_id = sub_id
        self.qos = QoS.AT_MOST_ONCE
        self.mailboxes: list[Subscription] = []
        self.handler_refs = 0
        self.replies = False
        self.no_local = False
        self.retain_as_published = False
        self.retain_handling = 0
        #: whether a topic name matches this route's filter (with fast paths for the usual
        #: shapes: no wildcard, and ``prefix/#``)
        self.matches: Callable[[str], bool] = filter_matcher(topic_filter)

    def unused(self) -> bool:
        return not self.mailboxes and self.handler_refs == 0 and not self.replies


class MQTTClient:
    """An MQTT 3.1.1 / 5.0 client for trio, on paho-mqtt.

    Use it as an async context manager; ``connect()`` inside the block (the seed's shape), or
    :func:`open_mqtt_client` to do both at once::

        client = MQTTClient()

        @client.on_message
        async def handle_message(message):
            print(f"Received: {message.payload}")

        async with client:
            await client.connect("localhost", 1883)
            await client.subscribe("test/topic", qos=QoS.AT_LEAST_ONCE)
            await client.publish("test/topic", "Hello MQTT", qos=QoS.AT_LEAST_ONCE)

    The ``async with`` block owns a nursery with the paho network thread and two tasks
    (reconnection, handler dispatch); when the block ends, the client disconnects cleanly and the
    thread is gone.

    Args:
        client_id: the MQTT client identifier (default: ``trionet`` and 16 random letters and
            digits from :mod:`secrets`, 23 characters in all: what MQTT 3.1.1 §3.1.3.1 obliges
            every broker to accept). Needed,
            and must be stable, for a persistent session (``clean_start=False``).
        protocol: ``4`` for MQTT 3.1.1 (default) or ``5`` for MQTT 5.0 (:data:`MQTTV311`,
            :data:`MQTTV5`).
        clean_start: True (default) starts a fresh session. False resumes the broker's session
            for this client id (subscriptions and queued QoS 1/2 messages survive disconnects).
        session_expiry: MQTT 5: seconds the broker keeps the session after a disconnect. None:
            0 with ``clean_start=True``, "never expires" with ``clean_start=False``.
        keepalive: seconds between keepalive pings; a broker that does not answer within about
            that time again is considered dead and the client reconnects (0 disables).
        username: user name for the broker.
        password: password for the broker. It is only sent over TLS: :meth:`connect` raises
            :exc:`~trionet.errors.ConfigurationError`, before any byte is sent, for a password
            on a connection without TLS, unless *allow_insecure_auth* is true.
        allow_insecure_auth: send the password over a connection without TLS anyway (anyone on
            the path can read it): for a broker on loopback or a trusted network.
        tls: an :class:`ssl.SSLContext` (with client certificates loaded, if the broker wants
            them), True for ``ssl.create_default_context()``, or None/False for plain TCP.
        transport: ``"tcp"`` or ``"websockets"``.
        websocket_path: the HTTP path of the WebSocket endpoint.
        websocket_headers: extra HTTP headers for the WebSocket handshake.
        will: a :class:`Will` message for the broker to publish if this client vanishes.
        reconnect: a :class:`ReconnectPolicy`, True for the default policy, False to fail the
            ``async with`` block with :exc:`~trionet.errors.MQTTNotConnected` when the
            connection is lost.
        max_inflight: QoS 1/2 publishes on the wire at once; further ones wait their turn on
            the network thread. An MQTT 5 broker's Receive Maximum caps it. MQTT 3.1.1 has no
            way to learn the broker's limit, so keep this at or below it: mosquitto (default
            ``max_inflight_messages 20``) answers a QoS 1 publish beyond its quota with a
            plain PUBACK and drops the message.
        receive_maximum: MQTT 5: how many unacknowledged QoS 1/2 messages the broker may send
            us at once (None: the broker's default).
        max_packet_size: the largest packet (bytes) this client sends; a larger publish raises
            :exc:`MQTTPublishError` at once and is never sent. An MQTT 5 broker announces its
            own limit (see :attr:`broker_limits`), which then applies too. MQTT 3.1.1 brokers
            announce none: set this to the broker's limit (mosquitto's ``max_packet_size``),
            or an oversize publish makes the broker close the connection, and the client
            resends it on every reconnect. None (default): MQTT's own limit (256 MiB).
        ack: when QoS 1/2 messages are acknowledged to the broker. ``"received"`` (default):
            once they are in a subscription or handler buffer (fast, and a consumer that
            stops never stalls the broker; a message is lost if the program dies before it is
            handled). ``"processed"``: once the ``on_message`` handlers returned without an
            exception and every ``subscription()`` block it went to called
            :meth:`Subscription.ack` for it. A message that is never acknowledged is sent
            again on the next connection of a persistent session (at-least-once processing)
            and holds one of the broker's in-flight slots until then. Acknowledgements may
            then go out in a different order than the messages arrived.
        max_concurrency: ``on_message`` handlers running at the same time.
        on_handler_error: ``"log"`` (default): an exception in an ``on_message`` handler is
            logged with the message and the client carries on; ``"raise"``: it fails the
            client's ``async with`` block.
        subscription_buffer_size: default buffer size of ``subscription()`` blocks.
        handler_buffer_size: messages queued for ``on_message`` handlers.
        max_buffered_messages: received messages held in all buffers together before the client
            stops reading from the broker until consumers catch up (the network thread may
            have as many again on their way, so at most about twice this many are in memory).
        connect_timeout: seconds to wait for the TCP/TLS/WebSocket handshake and the CONNACK.
        close_timeout: seconds the end of the ``async with`` block waits for running handlers
            and a clean DISCONNECT.
        reply_topic: the topic this client receives ``request()`` replies on (default:
            ``trionet/replies/<random>``).
        backend: ``"thread"`` (default): paho runs on a network thread owned by the client's
            nursery (a publish made while that thread idles is written by the trio thread,
            under a lock). ``"trio"``: no network thread; paho's socket is driven by trio's I/O
            waits on the trio thread (lower latency; connecting still uses a worker thread for
            the blocking handshakes). Same API and behaviour either way.

    Raises:
        ConfigurationError: an option is invalid.
    """

    def __init__(
        self,
        client_id: str | None = None,
        *,
        protocol: int = MQTTV311,
        clean_start: bool = True,
        session_expiry: int | None = None,
        keepalive: int = 60,
        username: str | None = None,
        password: str | None = None,
        allow_insecure_auth: bool = False,
        tls: ssl.SSLContext | bool | None = None,
        transport: Literal["tcp", "websockets"] = "tcp",
        websocket_path: str = "/mqtt",
        websocket_headers: dict[str, str] | None = None,
        will: Will | None = None,
        reconnect: ReconnectPolicy | bool = True,
        max_inflight: int = 20,
        receive_maximum: int | None = None,
        max_packet_size: int | None = None,
        ack: Literal["received", "processed"] = "received",
        max_concurrency: int = 16,
        on_handler_error: Literal["log", "raise"] = "log",
        subscription_buffer_size: int = 100,
        handler_buffer_size: int = 100,
        max_buffered_messages: int = 1000,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        reply_topic: str | None = None,
        backend: Literal["thread", "trio"] = "thread",
    ) -> None:
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
        self._allow_insecure_auth = allow_insecure_auth
        if reply_topic is not None:
            validate_topic(reply_topic)
        context: ssl.SSLContext | None
        if tls is True:
            context = ssl.create_default_context()
        elif tls is None or tls is False:
            context = None
        elif isinstance(tls, ssl.SSLContext):
            context = tls
        else:
            raise ConfigurationError("tls must be an ssl.SSLContext, True, False or None")

        self._backend = backend
        self._client_id = client_id
        self._protocol = protocol
        self._v5 = protocol == MQTTV5
        self._settings = EngineSettings(
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
        )
        if reconnect is True:
            self._policy: ReconnectPolicy | None = ReconnectPolicy()
        elif reconnect is False:
            self._policy = None
        elif isinstance(reconnect, ReconnectPolicy):
            self._policy = reconnect
        else:
            raise ConfigurationError("reconnect must be a ReconnectPolicy, True or False")
        self._max_concurrency = max_concurrency
        self._ack_processed = ack == "processed"
        self._on_handler_error = on_handler_error
        self._subscription_buffer_size = subscription_buffer_size
        self._max_buffered = max_buffered_messages
        self._resume_level = max_buffered_messages // 2
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._reply_topic = reply_topic or f"trionet/replies/{secrets.token_hex(8)}"

        self._handlers: list[tuple[str | None, MessageHandler]] = []
        self._handler_box = Subscription(self, "<on_message handlers>", QoS.EXACTLY_ONCE,
                                         handler_buffer_size)
        self._routes: dict[str, _Route] = {}
        self._routes_by_id: dict[int, _Route] = {}
        self._matcher: TopicMatcher[_Route] = TopicMatcher()
        self._event_streams: list[ConnectionEvents] = []

        self._state = ConnectionState.DISCONNECTED
        self._state_changed = trio.Event()
        self._entered = False
        self._running = False
        self._closing = False
        self._host = ""
        self._port = 0
        self._attempt = 0
        self._connect_boxes: dict[int, _Box[Connack | ConnectFailed]] = {}
        self._limits = BrokerLimits(max_packet_size=max_packet_size or MAX_PACKET_SIZE)
        self._backoff = 0  # the reconnect policy's wait number for the next attempt
        self._connected_at = 0.0
        self._lost = trio.Event()
        self._lost_while_connecting = False
        self._lost_code: int | None = None
        self._fatal: BaseException | None = None
        self._in_events = False
        self._acks: list[AckToken] = []
        self._held = 0
        self._paused = False
        self._qos0_credit = trio.Semaphore(_QOS0_CREDIT)
        self._reply_boxes: dict[bytes, _Box[MQTTMessage]] = {}
        self._reply_lock = trio.Lock()
        self._reply_ready = False
        self._corr_prefix = secrets.token_bytes(8)
        self._corr_counter = 0
        self._handlers_done = trio.Event()
        # counters
        self._received = 0
        self._published = 0
        self._handler_errors = 0
        self._unrouted = 0
        self._late_replies = 0
        self._reconnects = 0

        self._driver: Driver | None = None
        self._engine: PahoEngine | None = None
        self._lifecycle_cm: Any = None

    # -- properties -----------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        """The MQTT client identifier."""
        return self._client_id

    @property
    def protocol(self) -> int:
        """4 (MQTT 3.1.1) or 5 (MQTT 5.0)."""
        return self._protocol

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState`."""
        return self._state

    def _current_state(self) -> ConnectionState:
        # (a method, so that type checkers do not narrow self._state across awaits)
        return self._state

    def _reply_route_ready(self) -> bool:
        return self._reply_ready

    @property
    def broker_limits(self) -> BrokerLimits:
        """The limits the broker announced in the CONNACK of the current (or last) connection.

        MQTT 5 brokers announce them; on MQTT 3.1.1 (and before the first connection) these
        are the protocol's own limits. ``max_packet_size`` is at most the client's
        ``max_packet_size`` option. A publish that breaks one raises
        :exc:`MQTTPublishError` (``sent=False``) at once.
        """
        return self._limits

    @property
    def is_connected(self) -> bool:
        """Whether the client is connected right now."""
        return self._state is ConnectionState.CONNECTED

    @property
    def reply_topic(self) -> str:
        """The topic on which :meth:`request` receives replies."""
        return self._reply_topic

    def statistics(self) -> MQTTStatistics:
        """A snapshot of this client's counters."""
        return MQTTStatistics(
            state=self._state,
            messages_received=self._received,
            messages_published=self._published,
            publishes_pending=self._engine.pending_publishes if self._engine else 0,
            buffered_messages=self._held,
            reads_paused=self._paused,
            handler_errors=self._handler_errors,
            unrouted_messages=self._unrouted,
            late_replies=self._late_replies,
            reconnects=self._reconnects,
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an MQTTClient can be used in one 'async with' block only")
        self._entered = True
        self._lifecycle_cm = self._lifecycle()
        await self._lifecycle_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result: bool | None = await self._lifecycle_cm.__aexit__(exc_type, exc, tb)
        return result

    @asynccontextmanager
    async def _lifecycle(self) -> AsyncIterator[None]:
        inner: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                drivers = _load_drivers()
                driver: Driver
                if self._backend == "trio":
                    driver = drivers.TrioDriver(self._settings, self._on_events)
                else:
                    driver = drivers.ThreadDriver(
                        f"trionet-mqtt-{self._client_id}", self._settings, self._on_events
                    )
                driver.engine.transit.limit = self._max_buffered
                self._driver = driver
                self._engine = driver.engine
                await nursery.start(driver.run)
                nursery.start_soon(self._supervise)
                nursery.start_soon(self._dispatch_handlers)
                self._running = True
                graceful = False
                try:
                    yield
                    graceful = True
                finally:
                    await self._shutdown(graceful)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery is an implementation detail: one error comes out as itself.
            inner = single_exception(group)
            if inner is None:
                inner = self._one_failure(group)
            if inner is None:
                raise
        finally:
            self._running = False
        if inner is not None:
            # (raised outside the except block, so that it does not get the group as context)
            raise inner

    def _one_failure(self, group: BaseExceptionGroup[BaseException]) -> BaseException | None:
        """The client's own failure, if the group's other errors are only its consequences.

        When the connection is lost for good (``reconnect=False``, or the reconnect policy gave
        up), the supervisor fails the block with that error while the body's pending operations
        fail with :exc:`MQTTNotConnected` at the same moment: one failure, not a group of them.
        """
        fatal = self._fatal
        if fatal is None:
            return None
        found = False
        rest: list[BaseException] = [group]
        while rest:
            item = rest.pop()
            if isinstance(item, BaseExceptionGroup):
                rest.extend(item.exceptions)
            elif item is fatal:
                found = True
            elif not isinstance(item, MQTTNotConnected):
                return None
        return fatal if found else None

    async def _shutdown(self, graceful: bool) -> None:
        self._closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            if graceful:
                # let handlers finish what is queued and running
                self._handler_box._end()
                await self._handlers_done.wait()
            if self._state in (ConnectionState.CONNECTED, ConnectionState.RECONNECTING,
                               ConnectionState.CONNECTING):
                box: _Box[Any] = _Box()
                if self._engine is not None and self._submit_quiet(
                    self._engine.disconnect, box, "the MQTT client is closed"
                ):
                    await box.wait()
        self._set_state(ConnectionState.CLOSED, reason="the client's async with block ended")
        self._handler_box._end()
        for route in self._routes.values():
            for mailbox in route.mailboxes:
                mailbox._end()
        for stream in self._event_streams:
            stream._end()
        if self._driver is not None:
            self._driver.stop()

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

    # -- connection state -----------------------------------------------------------------------

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

    @asynccontextmanager
    async def connection_events(
        self, max_buffer_size: int = 16
    ) -> AsyncIterator[ConnectionEvents]:
        """Watch connection-state changes: ``async with client.connection_events() as events``.

        Yields a :class:`~trionet.mqtt.ConnectionEvents` receive channel of
        :class:`~trionet.mqtt.ConnectionEvent`; it keeps the newest *max_buffer_size* events.
        """
        if max_buffer_size < 1:
            raise ConfigurationError("max_buffer_size must be at least 1")
        stream = ConnectionEvents(max_buffer_size)
        if self._state is ConnectionState.CLOSED:
            stream._end()
        self._event_streams.append(stream)
        try:
            yield stream
        finally:
            self._event_streams.remove(stream)
            stream._end()

    async def wait_connected(self) -> None:
        """Wait until the client is connected (returns at once if it is).

        Raises:
            MQTTNotConnected: the client closed.
        """
        while self._state is not ConnectionState.CONNECTED:
            if self._state is ConnectionState.CLOSED:
                raise MQTTNotConnected("the MQTT client is closed")
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()

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

    async def connect(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        ssl: ssl.SSLContext | bool | None = None,
    ) -> None:
        """Connect to the broker and wait for its CONNACK.

        Args:
            host: the broker's host name or address.
            port: its port (default 1883, 8883 with TLS, 80/443 for WebSockets).
            username: overrides the constructor's user name (mtaio's signature).
            password: overrides the constructor's password.
            ssl: overrides the constructor's ``tls`` (only before the first connection).

        Raises:
            MQTTConnectError: the broker refused (``reason_code`` says why) or is unreachable.
            MQTTTimeout: no CONNACK within ``connect_timeout`` seconds.
            MQTTError: the client is already connected or connecting.
            MQTTNotConnected: used outside ``async with client:``.
        """
        self._engine_or_fail()
        if self._state is not ConnectionState.DISCONNECTED:
            raise MQTTError(f"the client is already {self._state.value}", fault="local")
        if username is not None or password is not None or ssl is not None:
            self._reconfigure(username, password, ssl)
        settings = self._settings
        if port is None:
            tls = settings.tls is not None
            if settings.transport == "websockets":
                port = 443 if tls else 80
            else:
                port = 8883 if tls else 1883
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"invalid port {port!r}")
        if settings.password is not None and settings.tls is None and (
            not self._allow_insecure_auth
        ):
            raise ConfigurationError(
                f"refusing to send the MQTT password to {host}:{port} over a connection "
                "without TLS: anyone on the path could read it. Connect with TLS (tls=True "
                "or an SSLContext; mqtts:// or wss:// in a URL), or pass "
                "allow_insecure_auth=True (?allow_insecure_auth=true) for a trusted network"
            )
        self._host, self._port = host, port
        self._backoff = 0
        self._set_state(ConnectionState.CONNECTING)
        try:
            session_present = await self._connect_once(first=True)
        except BaseException as exc:
            self._set_state(ConnectionState.DISCONNECTED, reason=str(exc),
                            reason_code=getattr(exc, "reason_code", None))
            raise
        self._set_state(ConnectionState.CONNECTED, session_present=session_present,
                        reason="connected")

    def _reconfigure(
        self, username: str | None, password: str | None, tls: ssl.SSLContext | bool | None
    ) -> None:
        settings = self._settings
        changes: dict[str, Any] = {}
        if username is not None:
            changes["username"] = username
            changes["password"] = password
        if tls is not None and tls is not False:
            context = ssl.create_default_context() if tls is True else tls
            if not isinstance(context, ssl.SSLContext):
                raise ConfigurationError("ssl must be an ssl.SSLContext or a bool")
            changes["tls"] = context
        if not changes:
            return
        new = dataclasses.replace(settings, **changes)
        if new == settings:
            return
        if self._host:
            raise ConfigurationError(
                "credentials and TLS can only be given to connect() before the first connection; "
                "pass them to MQTTClient() instead"
            )
        self._settings = new
        # rebuilt on the network thread, before the connect call that follows
        self._submit(self._engine_or_fail().reconfigure, new)

    async def _connect_once(self, *, first: bool) -> bool:
        self._attempt += 1
        attempt = self._attempt
        self._lost_while_connecting = False
        self._lost_code = None
        box: _Box[Connack | ConnectFailed] = _Box()
        self._connect_boxes[attempt] = box
        engine = self._engine_or_fail()
        driver = self._driver
        assert driver is not None
        answered = False
        event: Connack | ConnectFailed | None = None
        try:
            with trio.move_on_after(self._connect_timeout):
                try:
                    await driver.connect(attempt, self._host, self._port, first)
                except trio.ClosedResourceError:
                    raise MQTTNotConnected("the MQTT client is closed") from None
                event = await box.wait()
                answered = True
        finally:
            self._connect_boxes.pop(attempt, None)
            if not answered:
                driver.interrupt_connect()  # a handshake still blocking ends now
                self._submit_quiet(engine.abort_connect, attempt)
        where = f"{self._host}:{self._port}"
        if event is None:
            raise MQTTTimeout(f"no CONNACK from {where} within {self._connect_timeout:g} s")
        if isinstance(event, ConnectFailed):
            error = MQTTConnectError(f"cannot connect to {where}: {event.reason}")
            if event.error is not None:
                raise error from event.error
            raise error
        if not event.ok:
            raise MQTTConnectError(f"{where} refused the connection: {event.reason}",
                                   reason_code=event.reason_code)
        if self._lost_while_connecting:
            if self._fatal_takeover(self._lost_code_seen()):
                raise MQTTSessionTakenOver(self._client_id)
            raise MQTTConnectError(f"{where} closed the connection right after accepting it")
        return event.session_present

    def _lost_code_seen(self) -> int | None:
        # (a method, so that type checkers do not narrow self._lost_code across awaits)
        return self._lost_code

    def _fatal_takeover(self, code: int | None) -> bool:
        """Whether a loss with this reason code is a takeover that ends the client."""
        return code == SESSION_TAKEN_OVER and self._v5 and not (
            self._policy is not None and self._policy.retry_takeover
        )

    async def disconnect(self) -> None:
        """Send DISCONNECT and close the connection (no automatic reconnect afterwards).

        QoS 1/2 publishes still waiting for their handshake fail with
        :exc:`~trionet.errors.MQTTNotConnected`. ``connect()`` may be called again later.
        """
        if self._state in (ConnectionState.DISCONNECTED, ConnectionState.CLOSED):
            await trio.lowlevel.checkpoint()
            return
        engine = self._engine_or_fail()
        self._set_state(ConnectionState.DISCONNECTED, reason="disconnect() was called")
        box: _Box[Any] = _Box()
        self._submit(engine.disconnect, box, "disconnect() was called")
        with trio.move_on_after(self._close_timeout):
            await box.wait()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost = trio.Event()
            if self._fatal is not None:
                raise self._fatal
            if self._closing or self._state is not ConnectionState.RECONNECTING:
                continue
            await self._reconnect_loop()

    async def _reconnect_loop(self) -> None:
        policy = self._policy
        assert policy is not None
        attempt = 0
        last: BaseException | None = None
        while policy.max_attempts is None or attempt < policy.max_attempts:
            attempt += 1
            # (the backoff goes on from where the last outage left it, unless the connection
            # in between lasted policy.stable_after seconds: see _on_control_event)
            await trio.sleep(policy.delay(self._backoff))
            self._backoff += 1
            if self._closing or self._state is not ConnectionState.RECONNECTING:
                return
            try:
                session_present = await self._connect_once(first=False)
            except MQTTSessionTakenOver as exc:
                self._set_state(ConnectionState.DISCONNECTED, reason=str(exc),
                                reason_code=exc.reason_code)
                self._fatal = exc
                if self._engine is not None:
                    self._submit_quiet(self._engine.abandon, str(exc))
                raise
            except (MQTTConnectError, MQTTTimeout) as exc:
                last = exc
                _log.info("MQTT reconnect attempt %d to %s:%s failed: %s", attempt, self._host,
                          self._port, exc)
                self._set_state(ConnectionState.RECONNECTING, reason=str(exc), attempt=attempt,
                                reason_code=getattr(exc, "reason_code", None))
                continue
            if self._current_state() is not ConnectionState.RECONNECTING:  # disconnect()
                return
            self._reconnects += 1
            _log.info("MQTT client %s reconnected to %s:%s (session present: %s)",
                      self._client_id, self._host, self._port, session_present)
            self._set_state(ConnectionState.CONNECTED, session_present=session_present,
                            reason="reconnected")
            return
        self._set_state(ConnectionState.DISCONNECTED, reason="gave up reconnecting")
        error = MQTTConnectError(
            f"gave up reconnecting to {self._host}:{self._port} after {attempt} attempts: {last}",
            reason_code=getattr(last, "reason_code", None),
        )
        error.__cause__ = last
        self._fatal = error
        if self._engine is not None:
            self._submit_quiet(self._engine.abandon, "gave up reconnecting")
        raise error

    # -- events from the network thread (run in the trio thread, outside any task) --------------

    def _on_events(self, events: list[Event]) -> None:
        self._in_events = True
        engine = self._engine
        try:
            route = self._route_message
            for event in events:
                kind = type(event)
                if kind is Messages:
                    assert isinstance(event, Messages)
                    for message, token in event.received:
                        route(message, token)
                    if engine is not None:
                        engine.transit.taken(len(event.received))
                elif kind is Acked:
                    assert isinstance(event, Acked)
                    if event.reason_code >= 0x80:
                        event.waiter.fail(
                            MQTTPublishError(event.topic, event.reason_code, event.reason))
                    else:
                        self._published += 1
                        event.waiter.resolve()
                elif kind is Credit:
                    assert isinstance(event, Credit)
                    for _ in range(event.count):
                        self._qos0_credit.release()
                else:
                    self._on_control_event(event)
            if self._acks:
                tokens = self._acks
                self._acks = []
                self._send_acks(tokens)
            if not self._paused and self._held >= self._max_buffered:
                self._pause_reading(True)
            elif (engine is not None and not self._paused and engine.transit.take_waiting()
                  and self._driver is not None):
                self._driver.wake()  # the thread waits for us to catch up: wake it
        except Exception as exc:  # a bug in trionet: fail the client loudly, not trio
            _log.exception("internal error in the MQTT client")
            self._fatal = exc
            self._lost.set()
        finally:
            self._in_events = False

    def _on_control_event(self, event: Event) -> None:
        if isinstance(event, AckedMany):
            self._published += event.count
            event.waiter.resolve(count=event.count)
        elif isinstance(event, (SubAck, UnsubAck)):
            for waiter in event.waiters:
                waiter.resolve((event.reason_code, event.reason))
        elif isinstance(event, Failed):
            for waiter in event.waiters:
                waiter.fail(MQTTNotConnected(event.reason))
        elif isinstance(event, (Connack, ConnectFailed)):
            box = self._connect_boxes.get(event.attempt) if event.attempt is not None else None
            if box is not None:
                if isinstance(event, Connack) and event.ok:
                    self._limits = event.limits  # before any publish sees the new connection
                box.resolve(event)
        elif isinstance(event, Lost):
            self._on_lost(event.reason_code, event.reason, event.intentional)
        elif isinstance(event, ResubscribeFailed):
            _log.warning("MQTT client %s: the broker refused the resubscription to %r: %s",
                         self._client_id, event.topic_filter, event.reason)
        elif isinstance(event, Done):
            event.waiter.resolve(event.value)
        elif isinstance(event, NotSent):
            event.waiter.fail(
                MQTTPublishError(event.topic, event.reason_code, event.reason, sent=False))

    def _on_lost(self, code: int, reason: str, intentional: bool) -> None:
        if intentional:
            return
        if self._state in (ConnectionState.CONNECTING, ConnectionState.RECONNECTING):
            # the connection being set up died right after its CONNACK
            self._lost_while_connecting = True
            self._lost_code = code
            return
        if self._state is not ConnectionState.CONNECTED:
            return
        text = f"connection lost: {reason}"
        policy = self._policy
        if code == SESSION_TAKEN_OVER and self._v5:
            text = (f"connection lost: another client connected with client id "
                    f"{self._client_id!r} (session taken over)")
        _log.info("MQTT client %s: %s", self._client_id, text)
        if self._fatal_takeover(code) and not self._closing:
            self._set_state(ConnectionState.DISCONNECTED, reason_code=code, reason=text)
            if self._engine is not None:
                self._submit_quiet(self._engine.abandon, text)
            self._fatal = MQTTSessionTakenOver(self._client_id)
        elif policy is not None and not self._closing:
            uptime = trio.current_time() - self._connected_at
            if uptime >= policy.stable_after:
                self._backoff = 0
            else:
                _log.info("MQTT client %s: the connection lasted %.3g s only; the reconnect "
                          "backoff goes on (wait number %d)", self._client_id, uptime,
                          self._backoff + 1)
            self._set_state(ConnectionState.RECONNECTING, reason_code=code, reason=text,
                            attempt=1)
        else:
            self._set_state(ConnectionState.DISCONNECTED, reason_code=code, reason=text)
            if not self._closing and self._engine is not None:
                self._submit_quiet(self._engine.abandon, text)
                self._fatal = MQTTNotConnected(f"{text} (reconnect is disabled)")
        self._lost.set()

    def _route_message(self, message: MQTTMessage, token: AckToken | None) -> None:
        self._received += 1
        if self._closing:
            return  # not acknowledged: a persistent session gets it again
        routes: list[_Route]
        props = message.properties
        if props is not None and props.subscription_identifiers:
            # Only our subscriptions whose filter matches the topic: an identifier may also
            # belong to a subscription of an earlier run's session (a persistent session
            # keeps its subscriptions), whose messages must not reach an unrelated filter.
            by_id = self._routes_by_id
            topic = message.topic
            routes = []
            for sub_id in props.subscription_identifiers:
                route = by_id.get(sub_id)
                if route is not None and route.matches(topic):
                    routes.append(route)
        else:
            routes = list(self._matcher.match(message.topic))
        targets: list[Subscription] = []
        to_handlers = False
        for route in routes:
            if route.replies:
                self._deliver_reply(message)
                continue
            targets.extend(route.mailboxes)
            if route.handler_refs:
                to_handlers = True
        if not routes and self._handlers:
            to_handlers = True  # e.g. queued for a persistent session from an earlier run
        if to_handlers and self._handlers:
            targets.append(self._handler_box)
        if not targets:
            if not any(route.replies for route in routes):
                self._unrouted += 1
            if token is not None:
                self._acks.append(token)
            return
        waiting: list[Subscription] | None = None
        for mailbox in targets:
            if not mailbox._offer(message):
                if waiting is None:
                    waiting = []
                waiting.append(mailbox)
        if token is not None:
            if self._ack_processed:
                # acknowledged once every target is done with it (Subscription.ack)
                delivery = _Delivery(self, token, len(targets))
                for mailbox in targets:
                    mailbox._track(message, delivery)
            elif waiting is None:
                self._acks.append(token)
            else:
                delivery = _Delivery(self, token, len(waiting))
                for mailbox in waiting:
                    mailbox._set_delivery(delivery)

    def _ack(self, token: AckToken) -> None:
        """Acknowledge a message that waited for room in a buffer."""
        if self._in_events:
            self._acks.append(token)
        else:
            self._send_acks([token])

    def _send_acks(self, tokens: list[AckToken]) -> None:
        # written at once when the network thread is idle, else queued for it
        engine = self._engine
        driver = self._driver
        if engine is not None and driver is not None and not driver.try_direct(
            engine.ack, tokens
        ):
            self._submit_quiet(engine.ack, tokens)

    def _consumed(self) -> None:
        self._held -= 1
        if self._paused and self._held <= self._resume_level:
            self._pause_reading(False)

    def _pause_reading(self, paused: bool) -> None:
        engine = self._engine
        if engine is None:
            return
        self._paused = paused
        engine.read_paused.assign(paused)
        if not paused and self._driver is not None:
            self._driver.wake()  # so that it reads again

    # -- publishing -----------------------------------------------------------------------------

    def _paho_props(self, properties: MessageProperties | None) -> Any:
        if properties is None:
            return None
        if not self._v5:
            raise ConfigurationError("message properties need MQTT 5 (MQTTClient(protocol=5))")
        return _load_paho().publish_properties(properties)

    async def publish(
        self,
        topic: str,
        payload: Payload = None,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        retain: bool = False,
        *,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish a message and wait until its QoS handshake is complete.

        QoS 0 returns once the message is written to the socket (or, while the network thread
        is busy, queued for it); QoS 1 returns on PUBACK, QoS 2 on PUBCOMP. While the client is
        reconnecting, QoS 1/2 messages are queued and sent (again) on the new connection; QoS 0
        waits for it. Cancelling a QoS 1/2 publish stops the wait, not the delivery.

        Args:
            topic: the topic name (no wildcards).
            payload: bytes, or text (UTF-8 encoded), or None for an empty payload.
            qos: the :class:`QoS` level.
            retain: ask the broker to keep this as the topic's retained message.
            properties: MQTT 5 :class:`MessageProperties`.

        Raises:
            MQTTNotConnected: not connected (and not reconnecting), or the connection was given
                up while waiting.
            MQTTPublishError: an MQTT 5 broker refused the message (``reason_code``), or the
                message breaks a limit the broker announced (:attr:`broker_limits`: Maximum
                Packet Size, Retain Available, Maximum QoS); such a message is never sent
                (``sent=False``).
            InvalidTopic: the topic is not a valid topic name.
        """
        validate_topic(topic)
        data = payload if type(payload) is bytes else to_payload(payload)
        level = qos if type(qos) is QoS else to_qos(qos)
        props = self._paho_props(properties)
        engine = self._engine_or_fail()
        violation = limit_violation(self._limits, topic, data, level, retain, props, self._v5)
        if violation is not None:
            raise MQTTPublishError(topic, violation[0], violation[1], sent=False)
        if level == 0:
            if self._state is not ConnectionState.CONNECTED:
                await self._ready(queue_while_reconnecting=False)
            await trio.lowlevel.checkpoint_if_cancelled()
            # Written to the socket right here when the network thread is idle (see
            # ThreadDriver.try_direct); otherwise queued for it, under a credit.
            driver = self._driver
            if driver is not None and driver.try_direct(
                engine.publish0, topic, data, retain, props, False
            ):
                self._published += 1
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            try:
                self._qos0_credit.acquire_nowait()
            except trio.WouldBlock:
                await self._qos0_credit.acquire()  # the network thread is behind: wait
            else:
                # hand the message over first, then let other tasks run
                self._submit(engine.publish0, topic, data, retain, props)
                self._published += 1
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            self._submit(engine.publish0, topic, data, retain, props)
            self._published += 1
            return
        if self._state is not ConnectionState.CONNECTED:
            await self._ready(queue_while_reconnecting=True)
        box: _Box[None] = _Box()
        driver = self._driver
        if driver is None or not driver.try_direct(
            engine.publish, topic, data, int(level), retain, props, box
        ):
            self._submit(engine.publish, topic, data, int(level), retain, props, box)
        await box.wait()

    async def publish_many(
        self,
        messages: Iterable[MQTTMessage | tuple[str, Payload]],
        *,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        retain: bool = False,
    ) -> int:
        """Publish many messages, pipelined, and wait until all have completed their handshake.

        Args:
            messages: :class:`MQTTMessage` objects (each with its own QoS, retain flag and
                properties), or ``(topic, payload)`` pairs that use *qos* and *retain*.
            qos: QoS of the ``(topic, payload)`` pairs.
            retain: retain flag of the ``(topic, payload)`` pairs.

        Returns:
            The number of messages published.

        Raises:
            The same errors as :meth:`publish`; the first failure is raised once every message
            already handed over has completed. An invalid topic or a message that breaks one
            of the :attr:`broker_limits` raises as soon as the iteration reaches it; the
            messages from its batch of 256 on are not sent.
        """
        default_qos = int(to_qos(qos))
        engine = self._engine_or_fail()
        batch: list[tuple[str, bytes, int, bool, Any]] = []
        boxes: deque[_Box[None]] = deque()
        count = 0
        first_error: BaseException | None = None

        async def settle(limit: int) -> None:
            nonlocal first_error
            while len(boxes) > limit:
                try:
                    await boxes.popleft().wait()
                except MQTTError as exc:
                    if first_error is None:
                        first_error = exc

        async def send() -> None:
            nonlocal batch
            if self._state is not ConnectionState.CONNECTED:
                # QoS 1/2 messages are queued while reconnecting (and sent on the new
                # connection); a batch with QoS 0 messages waits for the connection.
                await self._ready(queue_while_reconnecting=all(item[2] for item in batch))
            box: _Box[None] = _Box(len(batch))
            self._submit(engine.publish_batch, batch, box)
            boxes.append(box)
            batch = []
            await settle(_BATCHES_IN_FLIGHT)

        for item in messages:
            if isinstance(item, MQTTMessage):
                validate_topic(item.topic)
                entry = (item.topic, item.payload, int(item.qos), item.retain,
                         self._paho_props(item.properties))
            else:
                topic, payload = item
                validate_topic(topic)
                entry = (topic, to_payload(payload), default_qos, retain, None)
            violation = limit_violation(self._limits, *entry, self._v5)
            if violation is not None:
                raise MQTTPublishError(entry[0], violation[0], violation[1], sent=False)
            batch.append(entry)
            count += 1
            if len(batch) >= _BATCH:
                await send()
        if batch:
            await send()
        await settle(0)
        if first_error is not None:
            raise first_error
        return count

    # -- subscriptions --------------------------------------------------------------------------

    def _route_for(self, topic_filter: str) -> _Route:
        route = self._routes.get(topic_filter)
        if route is None:
            parse_filter(topic_filter)
            sub_id = None
            if self._v5:
                sub_id = subscription_identifier(topic_filter)
                while sub_id in self._routes_by_id:  # another filter of ours has it
                    sub_id = sub_id % _MAX_SUB_ID + 1
            route = _Route(topic_filter, sub_id)
            self._routes[topic_filter] = route
            if sub_id is not None:
                self._routes_by_id[sub_id] = route
            self._matcher.add(topic_filter, route)
        return route

    def _drop_route_if_unused(self, route: _Route) -> bool:
        if not route.unused() or self._routes.get(route.topic_filter) is not route:
            return False
        del self._routes[route.topic_filter]
        if route.sub_id is not None:
            self._routes_by_id.pop(route.sub_id, None)
        self._matcher.remove(route.topic_filter, route)
        return True

    def _check_v5_options(self, no_local: bool, retain_as_published: bool,
                          retain_handling: int) -> None:
        if retain_handling not in (0, 1, 2):
            raise ConfigurationError("retain_handling must be 0, 1 or 2")
        if not self._v5 and (no_local or retain_as_published or retain_handling):
            raise ConfigurationError(
                "no_local, retain_as_published and retain_handling need MQTT 5 (protocol=5)"
            )

    async def _broker_subscribe(self, route: _Route, qos: QoS, no_local: bool,
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

    def _unsubscribe_soon(self, route: _Route) -> None:
        """Drop an unused route and tell the broker, without waiting for the UNSUBACK."""
        if self._drop_route_if_unused(route) and self._engine is not None and not self._closing:
            self._submit_quiet(self._engine.unsubscribe, _Box(), route.topic_filter)

    async def subscribe(
        self,
        topic: str,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> QoS:
        """Subscribe to a topic filter; its messages go to the ``on_message`` handlers.

        Waits for the broker's SUBACK. While the client is reconnecting, the subscription is
        made as soon as the connection is back. Subscriptions are restored automatically after a
        reconnect that did not resume the session.

        Args:
            topic: a topic filter: ``+`` and ``#`` wildcards, ``$share/<group>/<filter>``.
            qos: the maximum QoS to receive messages with.
            no_local: MQTT 5: do not receive this client's own publications.
            retain_as_published: MQTT 5: keep the retain flag of forwarded messages.
            retain_handling: MQTT 5: 0 send retained messages on subscribe, 1 only for a new
                subscription, 2 never.

        Returns:
            The QoS the broker granted.

        Raises:
            MQTTSubscribeError: the broker refused (``reason_code`` says why).
            InvalidTopic: the filter is malformed.
            MQTTNotConnected: not connected or reconnecting.
        """
        level = to_qos(qos)
        parse_filter(topic)
        self._check_v5_options(no_local, retain_as_published, retain_handling)
        self._engine_or_fail()
        route = self._route_for(topic)
        route.handler_refs += 1
        ok = False
        try:
            granted = await self._broker_subscribe(route, level, no_local, retain_as_published,
                                                   retain_handling)
            ok = True
        finally:
            if not ok:
                route.handler_refs -= 1
                self._unsubscribe_soon(route)
        return granted

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe a filter given to :meth:`subscribe` and wait for the UNSUBACK.

        ``subscription()`` blocks on the same filter keep receiving (the broker subscription
        stays until the last of them ends).

        Raises:
            InvalidTopic: the filter is malformed.
            MQTTNotConnected: not connected.
        """
        parse_filter(topic)
        engine = self._engine_or_fail()
        route = self._routes.get(topic)
        if route is not None:
            route.handler_refs = 0
            if not self._drop_route_if_unused(route):
                await trio.lowlevel.checkpoint()
                return
        if self._state is not ConnectionState.CONNECTED:
            await self._ready(queue_while_reconnecting=True)
        box: _Box[tuple[int, str]] = _Box()
        self._submit(engine.unsubscribe, box, topic)
        await box.wait()

    @asynccontextmanager
    async def subscription(
        self,
        topic: str,
        qos: QoS | int = QoS.AT_MOST_ONCE,
        *,
        max_buffer_size: int | None = None,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the duration of an ``async with`` block and receive the messages::

            async with client.subscription("sensors/+", qos=1) as messages:
                async for message in messages:
                    ...

        The block's :class:`Subscription` has a buffer of *max_buffer_size* messages. When it is
        full, QoS 1/2 messages are acknowledged only once there is room (the broker's in-flight
        window then throttles it), and reading from the broker pauses once the client holds
        ``max_buffered_messages`` in all: a slow consumer costs bounded memory and loses no
        QoS 1/2 message. Leaving the block unsubscribes (unless other blocks or
        :meth:`subscribe` still use the filter) and drops what is still buffered.

        Args:
            topic: a topic filter (wildcards, ``$share/<group>/<filter>``).
            qos: the maximum QoS to receive messages with.
            max_buffer_size: the buffer size (default: the client's
                ``subscription_buffer_size``).
            no_local: MQTT 5: do not receive this client's own publications.
            retain_as_published: MQTT 5: keep the retain flag of forwarded messages.
            retain_handling: MQTT 5: 0 send retained messages on subscribe, 1 only for a new
                subscription, 2 never.

        Raises:
            MQTTSubscribeError: the broker refused the subscription.
        """
        level = to_qos(qos)
        parse_filter(topic)
        self._check_v5_options(no_local, retain_as_published, retain_handling)
        size = self._subscription_buffer_size if max_buffer_size is None else max_buffer_size
        if not isinstance(size, int) or size < 1:
            raise ConfigurationError("max_buffer_size must be an int >= 1")
        self._engine_or_fail()
        mailbox = Subscription(self, topic, level, size)
        route = self._route_for(topic)
        route.mailboxes.append(mailbox)
        subscribed = False
        try:
            mailbox.granted_qos = await self._broker_subscribe(
                route, level, no_local, retain_as_published, retain_handling
            )
            subscribed = True
            yield mailbox
        finally:
            route.mailboxes.remove(mailbox)
            mailbox._discard()
            if not subscribed:
                self._unsubscribe_soon(route)  # refused or cancelled: do not wait
            elif (
                self._drop_route_if_unused(route)
                and not self._closing
                and self._state is ConnectionState.CONNECTED
            ):
                box: _Box[tuple[int, str]] = _Box()
                if self._engine is not None and self._submit_quiet(
                    self._engine.unsubscribe, box, topic
                ):
                    # best effort: if the connection or the client goes away meanwhile, the
                    # broker forgets the subscription with the session anyway
                    with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                        try:
                            await box.wait()
                        except MQTTError as exc:
                            _log.debug("unsubscribing %r at the end of its block: %s", topic, exc)

    # -- on_message handlers --------------------------------------------------------------------

    @overload
    def on_message(self, handler: MessageHandler, /) -> MessageHandler: ...

    @overload
    def on_message(self, topic_filter: str, /) -> Callable[[MessageHandler], MessageHandler]: ...

    def on_message(
        self, handler_or_filter: MessageHandler | str, /
    ) -> MessageHandler | Callable[[MessageHandler], MessageHandler]:
        """Register an async message handler (usable as a decorator).

        ``@client.on_message`` receives every message of the filters given to
        :meth:`subscribe`; ``@client.on_message("sensors/#")`` only those matching the filter.
        Handlers run in their own tasks (at most ``max_concurrency`` at once), so a slow handler
        never delays acknowledgements or keepalive; an exception is logged with the message
        (or fails the client with ``on_handler_error="raise"``).
        """
        if isinstance(handler_or_filter, str):
            topic_filter = handler_or_filter
            parse_filter(topic_filter)

            def register(handler: MessageHandler) -> MessageHandler:
                if not callable(handler):
                    raise ConfigurationError("an on_message handler must be an async callable")
                self._handlers.append((topic_filter, handler))
                return handler

            return register
        if not callable(handler_or_filter):
            raise ConfigurationError("an on_message handler must be an async callable")
        self._handlers.append((None, handler_or_filter))
        return handler_or_filter

    def take_ack(self, message: MQTTMessage) -> Callable[[], None]:
        """In an ``on_message`` handler, with ``ack="processed"``: acknowledge *message* later.

        Returns a function to call once the message is processed (calling it again does
        nothing); the handler returning no longer acknowledges it. Useful when a handler only
        hands the message on (to a queue, another task). With ``ack="received"``, for QoS 0
        messages, or outside a handler, the returned function does nothing.
        """
        entry = self._handler_box._unacked.pop(id(message), None)
        if entry is None or entry[0] is not message:
            return _nothing
        delivery = entry[1]
        done = False

        def ack() -> None:
            nonlocal done
            if not done:
                done = True
                delivery.accepted()

        return ack

    async def _dispatch_handlers(self) -> None:
        limit = trio.Semaphore(self._max_concurrency)
        box = self._handler_box
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        message = await box.receive()
                    except trio.EndOfChannel:
                        break
                    await limit.acquire()
                    nursery.start_soon(self._run_handlers, message, limit)
        finally:
            self._handlers_done.set()

    async def _run_handlers(self, message: MQTTMessage, limit: trio.Semaphore) -> None:
        failed = False
        try:
            for topic_filter, handler in list(self._handlers):
                if topic_filter is not None and not topic_matches(topic_filter, message.topic):
                    continue
                try:
                    await handler(message)
                except Exception:
                    failed = True
                    self._handler_errors += 1
                    if self._on_handler_error == "raise":
                        raise
                    _log.exception(
                        "MQTT on_message handler %s failed on %r%s",
                        getattr(handler, "__qualname__", handler), message,
                        " (not acknowledged: the broker sends it again on the next connection)"
                        if self._ack_processed and message.qos else "",
                    )
            if not failed:
                self._handler_box.ack(message)  # (ack="processed"; a no-op otherwise)
        finally:
            limit.release()

    # -- request / response ---------------------------------------------------------------------

    async def _ensure_reply_route(self) -> None:
        if self._reply_ready:
            return
        async with self._reply_lock:
            if self._reply_route_ready():
                return
            route = self._route_for(self._reply_topic)
            route.replies = True
            ok = False
            try:
                await self._broker_subscribe(route, QoS.AT_LEAST_ONCE, False, False, 0)
                ok = True
            finally:
                if not ok:
                    route.replies = False
                    self._unsubscribe_soon(route)
            self._reply_ready = True

    def _deliver_reply(self, message: MQTTMessage) -> None:
        props = message.properties
        correlation = props.correlation_data if props is not None else None
        box = self._reply_boxes.pop(correlation, None) if correlation is not None else None
        if box is None:
            self._late_replies += 1
            _log.debug("dropping a late or unknown MQTT reply on %r", message.topic)
            return
        box.resolve(message)

    async def request(
        self,
        topic: str,
        payload: Payload = None,
        *,
        qos: QoS | int = QoS.AT_LEAST_ONCE,
        properties: MessageProperties | None = None,
    ) -> MQTTMessage:
        """Publish a request and wait for the reply (request/response over MQTT).

        MQTT 5 uses the response topic and correlation data properties; on MQTT 3.1.1 trionet
        wraps them around the payload (the responder must be a trionet client, which unwraps
        them transparently). All requests of a client share one reply subscription, made by the
        first request. Put a deadline on it yourself::

            with trio.fail_after(5):
                reply = await client.request("rpc/add", b"2 3")

        A reply that arrives after its request gave up is dropped (and counted in
        ``statistics().late_replies``).

        Args:
            topic: where the responder listens.
            payload: the request payload.
            qos: QoS of the request.
            properties: MQTT 5 properties to send along (content type, user properties...).

        Returns:
            The reply message.
        """
        validate_topic(topic)
        data = to_payload(payload)
        await self._ensure_reply_route()
        self._corr_counter += 1
        correlation = self._corr_prefix + self._corr_counter.to_bytes(8, "big")
        box: _Box[MQTTMessage] = _Box()
        self._reply_boxes[correlation] = box
        try:
            if self._v5:
                props = dataclasses.replace(
                    properties or MessageProperties(),
                    response_topic=self._reply_topic,
                    correlation_data=correlation,
                )
                await self.publish(topic, data, qos, properties=props)
            else:
                if properties is not None:
                    raise ConfigurationError("message properties need MQTT 5 (protocol=5)")
                await self.publish(
                    topic, pack_request_envelope(self._reply_topic, correlation, data), qos
                )
            reply = await box.wait()
        finally:
            self._reply_boxes.pop(correlation, None)
        assert reply is not None
        return reply

    async def reply(
        self,
        request: MQTTMessage,
        payload: Payload = None,
        *,
        qos: QoS | int | None = None,
        properties: MessageProperties | None = None,
    ) -> None:
        """Answer a request received from :meth:`request` (or any MQTT 5 request).

        Args:
            request: the received request message.
            payload: the reply payload.
            qos: QoS of the reply (default: the request's).
            properties: MQTT 5 properties of the reply.

        Raises:
            MQTTError: the message carries no response topic.
        """
        props = request.properties
        if props is None or props.response_topic is None:
            raise MQTTError(
                f"the message on {request.topic!r} has no response topic: it is not a request",
                fault="local",
            )
        level = request.qos if qos is None else qos
        data = to_payload(payload)
        if self._v5:
            out = dataclasses.replace(
                properties or MessageProperties(), correlation_data=props.correlation_data
            )
            await self.publish(props.response_topic, data, level, properties=out)
        else:
            if properties is not None:
                raise ConfigurationError("message properties need MQTT 5 (protocol=5)")
            envelope = pack_reply_envelope(props.correlation_data or b"", data)
            await self.publish(props.response_topic, envelope, level)


# -- open_mqtt_client ------------------------------------------------------------------------


@asynccontextmanager
async def open_mqtt_client(
    url_or_host: str = "localhost",
    port: int | None = None,
    **options: Unpack[MQTTClientOptions],
) -> AsyncIterator[MQTTClient]:
    """Create an :class:`MQTTClient`, connect it, and close it when the block ends::

        async with open_mqtt_client("mqtt://localhost:1883") as client:
            await client.publish("greetings", "hello", qos=1)

    Args:
        url_or_host: an MQTT URL (see :func:`parse_mqtt_url`) or a host name.
        port: the port (overrides the URL's).
        **options: :class:`MQTTClient` options (override the URL's).

    Raises:
        MQTTConnectError: the broker refused or is unreachable.
        ConfigurationError: an invalid URL or option.
    """
    if "://" in url_or_host:
        host, url_port, from_url = parse_mqtt_url(url_or_host)
        merged: dict[str, Any] = {**from_url, **options}
        if port is None:
            port = url_port
    else:
        host = url_or_host
        merged = dict(options)
    client = MQTTClient(**merged)
    async with client:
        await client.connect(host, port)
        yield client
