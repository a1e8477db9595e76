"""The MQTT client: trio tasks on one side, paho-mqtt (driven by :mod:`._driver`) on the other.

Shape of one client (everything lives in the nursery its ``async with`` opens)::

    trio tasks ── driver.submit(engine.method, ...) ──►  PahoEngine: paho client, socket,
       ▲          (publish, ack: driver.try_direct)      keepalive, in-flight window
       │                                                 (on a LoopThread, or on the trio
       │          batches of events                      thread with backend="trio")
       └──────────────────────────────────────────────────┘
    _on_events (trio thread): resolve waiters, route messages into bounded buffers, ack

    background tasks: _supervise (reconnect with backoff), _dispatch_handlers (on_message)

The client is cut along its concerns (see :mod:`._base`): this module keeps the life cycle
(the nursery, the driver, shutdown) and the event pump; connecting, reconnecting, publishing,
subscriptions and request/response are the bases of :class:`MQTTClient`, and the synchronous
cores they drive (routing, flow control, pending replies, options) have no task and no socket.

Nothing here calls paho directly; :mod:`trionet.mqtt._paho` is the only module that does.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._util import EnterOnce, single_exception
from ..errors import MQTTNotConnected
from ..supervision import RetryPolicy
from ..tls import TLSOptions
from ._auth import Authenticator
from ._base import MessageHandler, load_drivers
from ._errors import MQTTPublishError
from ._events import (
    Acked,
    AckedMany,
    AckToken,
    AuthDone,
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
from ._flow import FlowControl
from ._message import (
    MAX_PACKET_SIZE,
    MQTTV311,
    BrokerLimits,
    ConnectionState,
    MQTTStatistics,
    QoS,
    Will,
)
from ._options import MQTTClientOptions, build_options
from ._reconnect import ReconnectPolicy
from ._reconnecting import Reconnecting
from ._replies import Replies
from ._request import Requesting
from ._router import Router
from ._subscribing import Subscribing
from ._subscription import Subscription, _Box
from ._url import parse_mqtt_url

if TYPE_CHECKING:
    from typing import Self, Unpack

    from ._driver import Driver

__all__ = ["MQTTClient", "MessageHandler", "open_mqtt_client"]

_log = logging.getLogger("trionet.mqtt")

_QOS0_CREDIT = 1024


class MQTTClient(EnterOnce, Reconnecting, Subscribing, Requesting):
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
            the path can read it): for a broker on loopback or a trusted network. It also
            lets an *authenticator* run without TLS.
        authenticator: MQTT 5 enhanced authentication (AUTH packets): an
            :class:`~trionet.mqtt.Authenticator`, for example a
            :class:`~trionet.mqtt.ScramAuthenticator`. Every connection attempt (reconnects
            too) runs its exchange; a failed one raises :exc:`~trionet.mqtt.MQTTAuthError`.
            Needs ``protocol=5``. Like a password, it needs TLS unless *allow_insecure_auth*
            is true: even where the secret itself never goes over the wire (SCRAM), an
            eavesdropper who records the exchange can try passwords against it offline, and
            an active attacker can make the client talk to it before the check fails.
        tls: True for ``ssl.create_default_context()`` (verified against the system's CAs),
            an :class:`ssl.SSLContext` (with client certificates loaded, if the broker wants
            them), a :class:`~trionet.tls.TLSOptions` (a private CA, a client certificate), or
            None/False for plain TCP: the ``tls=`` vocabulary of :mod:`trionet.tls`.
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
        authenticator: Authenticator | None = None,
        tls: ssl.SSLContext | TLSOptions | bool | None = None,
        transport: Literal["tcp", "websockets"] = "tcp",
        websocket_path: str = "/mqtt",
        websocket_headers: dict[str, str] | None = None,
        will: Will | None = None,
        reconnect: ReconnectPolicy | RetryPolicy | bool = True,
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
        options, settings = build_options(
            client_id, protocol=protocol, clean_start=clean_start,
            session_expiry=session_expiry, keepalive=keepalive, username=username,
            password=password, allow_insecure_auth=allow_insecure_auth, tls=tls,
            transport=transport, websocket_path=websocket_path,
            websocket_headers=websocket_headers, will=will, reconnect=reconnect,
            max_inflight=max_inflight, receive_maximum=receive_maximum,
            max_packet_size=max_packet_size, ack=ack, max_concurrency=max_concurrency,
            on_handler_error=on_handler_error, subscription_buffer_size=subscription_buffer_size,
            handler_buffer_size=handler_buffer_size, max_buffered_messages=max_buffered_messages,
            connect_timeout=connect_timeout, close_timeout=close_timeout,
            reply_topic=reply_topic, backend=backend, authenticator=authenticator,
        )
        self._options = options
        self._settings = settings
        self._client_id = options.client_id
        self._protocol = options.protocol
        self._v5 = options.v5
        self._flow = FlowControl(max_buffered_messages, pause=self._pause_reading,
                                 send_acks=self._send_acks)
        self._replies = Replies(reply_topic or f"trionet/replies/{secrets.token_hex(8)}")
        handler_box = Subscription(self._flow, "<on_message handlers>", QoS.EXACTLY_ONCE,
                                   handler_buffer_size)
        self._router = Router(self._flow, handler_box, v5=self._v5,
                              ack_processed=options.ack_processed,
                              on_reply=self._replies.deliver)
        self._handlers = []
        self._event_streams = []

        self._state = ConnectionState.DISCONNECTED
        self._state_changed = trio.Event()
        self._running = False
        self._closing = False
        self._host = ""
        self._port = 0
        self._attempt = 0
        self._connect_boxes = {}
        self._limits = BrokerLimits(max_packet_size=max_packet_size or MAX_PACKET_SIZE)
        self._backoff = 0  # the reconnect policy's wait number for the next attempt
        self._connected_at = 0.0
        self._lost = trio.Event()
        self._lost_while_connecting = False
        self._lost_code = None
        self._fatal = None
        self._qos0_credit = trio.Semaphore(_QOS0_CREDIT)
        self._reauth_lock = trio.Lock()
        self._handlers_done = trio.Event()
        # counters
        self._published = 0
        self._handler_errors = 0
        self._reconnects = 0

        self._driver = None
        self._engine = None


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
        return self._replies.topic

    def statistics(self) -> MQTTStatistics:
        """A snapshot of this client's counters."""
        return MQTTStatistics(
            state=self._state,
            messages_received=self._router.received,
            messages_published=self._published,
            publishes_pending=self._engine.pending_publishes if self._engine else 0,
            buffered_messages=self._flow.held,
            reads_paused=self._flow.paused,
            handler_errors=self._handler_errors,
            unrouted_messages=self._router.unrouted,
            late_replies=self._replies.late,
            reconnects=self._reconnects,
        )

    _entered_twice_message = "an MQTTClient can be used in one 'async with' block only"

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        # (EnterOnce: ``async with client`` enters this once; a second time raises RuntimeError)
        inner: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                drivers = load_drivers()
                driver: Driver
                if self._options.backend == "trio":
                    driver = drivers.TrioDriver(self._settings, self._on_events)
                else:
                    driver = drivers.ThreadDriver(
                        f"trionet-mqtt-{self._client_id}", self._settings, self._on_events
                    )
                driver.engine.transit.limit = self._flow.max_buffered
                self._driver = driver
                self._engine = driver.engine
                await nursery.start(driver.run)
                nursery.start_soon(self._supervise)
                nursery.start_soon(self._dispatch_handlers)
                self._running = True
                graceful = False
                try:
                    yield self
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
        self._router.closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(self._options.close_timeout):
            if graceful:
                # let handlers finish what is queued and running
                self._router.handler_box._end()
                await self._handlers_done.wait()
            if self._state in (ConnectionState.CONNECTED, ConnectionState.RECONNECTING,
                               ConnectionState.CONNECTING):
                box: _Box[Any] = _Box()
                if self._engine is not None and self._submit_quiet(
                    self._engine.disconnect, box, "the MQTT client is closed"
                ):
                    await box.wait()
        self._set_state(ConnectionState.CLOSED, reason="the client's async with block ended")
        self._router.end_all()
        for stream in self._event_streams:
            stream._end()
        if self._driver is not None:
            self._driver.stop()

    def _on_events(self, events: list[Event]) -> None:
        engine = self._engine
        flow = self._flow
        flow.begin_batch()
        try:
            route = self._router.route
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
            paused = flow.end_batch()
            if (not paused and engine is not None and engine.transit.take_waiting()
                    and self._driver is not None):
                self._driver.wake()  # the thread waits for us to catch up: wake it
        except Exception as exc:  # a bug in trionet: fail the client loudly, not trio
            flow.abort_batch()
            _log.exception("internal error in the MQTT client")
            self._fatal = exc
            self._lost.set()

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
        elif isinstance(event, AuthDone):
            if event.error is None:
                event.waiter.resolve()
            else:
                event.waiter.fail(event.error)
        elif isinstance(event, NotSent):
            event.waiter.fail(
                MQTTPublishError(event.topic, event.reason_code, event.reason, sent=False))

    def _send_acks(self, tokens: list[AckToken]) -> None:
        # written at once when the network thread is idle, else queued for it
        engine = self._engine
        driver = self._driver
        if engine is not None and driver is not None and not driver.try_direct(
            engine.ack, tokens
        ):
            self._submit_quiet(engine.ack, tokens)

    def _pause_reading(self, paused: bool) -> None:
        # (FlowControl's callback: stop or resume reading from the broker)
        engine = self._engine
        if engine is None:
            return
        engine.read_paused.assign(paused)
        if not paused and self._driver is not None:
            self._driver.wake()  # so that it reads again


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
