"""The only module that imports paho-mqtt: one paho client, driven by one loop, with batched I/O.

:class:`PahoEngine` owns a paho-mqtt 2.x client (callback API version 2) and everything that
touches it. The engine is never used by two threads at once (paho is not thread-safe, and
several of its cross-thread paths can deadlock: eclipse-paho/paho.mqtt.python#354, #177, #358):
its *owner* is the dedicated network thread of :class:`trionet._threads.LoopThread`, or, with
``backend="trio"``, the trio thread. With a network thread, the trio thread runs an engine
method itself only while it holds the lock the network thread lets go of when it waits for its
socket (a publish, an acknowledgement: see ``ThreadDriver.try_direct``). Results go back to
trio as *events*.

Events (frozen dataclasses of :mod:`trionet.mqtt._events`) are collected while paho runs its
callbacks and handed to trio in one batch per loop round (one wake-up of trio per round, not
one thread hop per message).

Three paho behaviours are changed, by overriding private hooks of ``paho.mqtt.client.Client``
(pinned to paho-mqtt 2.x; ``tests/mqtt/test_mqtt_paho_internals.py`` fails loudly if a paho
release moves them):

* **Buffered socket I/O.** paho reads every packet with three ``recv`` calls (type byte, length,
  body) and writes every packet with its own ``send``. :class:`_BufferedClient` reads 64 KiB at a
  time and serves paho's small reads from that buffer, and collects outgoing packets and writes
  them once per loop round. On a loaded connection this removes most system calls.
* **Protocol fixes.** With ``manual_ack`` paho does not answer a PUBREL whose packet id it does not
  know (a QoS 2 message it had already delivered before a reconnect), so the broker would wait
  for that PUBCOMP for ever; the override answers it. paho answers every PUBREC with PUBREL,
  even one whose MQTT 5 reason code refuses the message; the override ends the exchange there
  and reports the refusal. Packet ids are never handed out while the
  same id is still in flight (after 65535 messages a slow QoS 1 message and a new publish could
  otherwise share one), a failed TLS or WebSocket handshake closes its socket, and TCP
  sockets get ``TCP_NODELAY``.
* **A shorter per-message path.** A QoS 0 PUBLISH without properties is encoded here
  (:func:`encode_publish0`: no packet id, no state) instead of through paho's ``publish()``,
  and every received message goes straight to ``on_message`` without paho's per-topic
  callback lookup. Both matter for the latency of one message.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from .._threads import CrossThreadFlag, SocketInterrupter, TransitWindow
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
    Waiter,
)
from ._limits import limit_violation, limits_from_connack
from ._message import (
    ENVELOPE_MAGIC,
    BrokerLimits,
    MessageProperties,
    MQTTMessage,
    QoS,
    unpack_envelope,
)
from ._options import EngineSettings
from ._paho_auth import EngineAuth
from ._paho_subs import Spec, SubscriptionBook

__all__ = [
    "EngineSettings",
    "PahoEngine",
    "encode_publish0",
    "publish_properties",
]

_log = logging.getLogger("trionet.mqtt")

_READ_SIZE: Final = 65536
_WRITE_HIGH_WATER: Final = 1 << 20
_MAX_READS_PER_ROUND: Final = 256
_SUCCESS: Final = MQTTErrorCode.MQTT_ERR_SUCCESS
_NO_CONN: Final = MQTTErrorCode.MQTT_ERR_NO_CONN
_QOS: Final = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
_SESSION_NEVER_EXPIRES: Final = 0xFFFFFFFF
# what a bare PUBACK/PUBCOMP means, made once (read only; see _handle_pubackcomp)
_ACK_SUCCESS: Final = ReasonCode(PacketTypes.PUBACK)
_NO_ACK_PROPERTIES: Final = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_NO_REC_PROPERTIES: Final = Properties(PacketTypes.PUBREC)  # type: ignore[no-untyped-call]


# -- MQTT 5 property conversion -----------------------------------------------------------------


def to_paho_properties(props: MessageProperties | None, packet_type: int) -> Properties | None:
    """Build paho ``Properties`` for a PUBLISH (or will) from :class:`MessageProperties`."""
    if props is None:
        return None
    out = Properties(packet_type)  # type: ignore[no-untyped-call]
    empty = True
    if props.payload_format_indicator is not None:
        out.PayloadFormatIndicator = props.payload_format_indicator
        empty = False
    if props.message_expiry_interval is not None:
        out.MessageExpiryInterval = props.message_expiry_interval
        empty = False
    if props.content_type is not None:
        out.ContentType = props.content_type
        empty = False
    if props.response_topic is not None:
        out.ResponseTopic = props.response_topic
        empty = False
    if props.correlation_data is not None:
        out.CorrelationData = props.correlation_data
        empty = False
    if props.user_properties:
        out.UserProperty = list(props.user_properties)
        empty = False
    return None if empty else out


def from_paho_properties(props: Properties | None) -> MessageProperties | None:
    """Convert received paho ``Properties`` (None when there are none of interest)."""
    if props is None:
        return None
    attrs = props.__dict__
    # paho keeps its four bookkeeping attributes in __dict__ too; only set properties add more
    if len(attrs) <= 4:
        return None
    user = attrs.get("UserProperty")
    ids = attrs.get("SubscriptionIdentifier")
    correlation = attrs.get("CorrelationData")
    return MessageProperties(
        payload_format_indicator=attrs.get("PayloadFormatIndicator"),
        message_expiry_interval=attrs.get("MessageExpiryInterval"),
        content_type=attrs.get("ContentType"),
        response_topic=attrs.get("ResponseTopic"),
        correlation_data=bytes(correlation) if correlation is not None else None,
        user_properties=tuple((str(k), str(v)) for k, v in user) if user else (),
        subscription_identifiers=tuple(ids) if ids else (),
    )


def publish_properties(props: MessageProperties | None) -> Properties | None:
    """paho ``Properties`` for a PUBLISH packet (None when there is nothing to send)."""
    return to_paho_properties(props, PacketTypes.PUBLISH)


def reason_name(code: ReasonCode | int) -> str:
    """Human-readable name of a paho reason code."""
    if isinstance(code, ReasonCode):
        return str(code).lower()
    return f"reason code {code}"


def connect_properties(settings: EngineSettings) -> Properties | None:
    """The MQTT 5 CONNECT properties for *settings* (None for MQTT 3.1.1)."""
    if settings.protocol != 5:
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    expiry = settings.session_expiry
    if expiry is None:
        expiry = 0 if settings.clean_start else _SESSION_NEVER_EXPIRES
    if expiry:
        props.SessionExpiryInterval = expiry
    if settings.receive_maximum is not None:
        props.ReceiveMaximum = settings.receive_maximum
    return props


def to_message(msg: paho.MQTTMessage, topic: str, v5: bool) -> MQTTMessage:
    """A received paho message as an :class:`MQTTMessage` (an MQTT 3.1.1 request/reply
    envelope unwrapped into its properties)."""
    payload = msg.payload
    if type(payload) is not bytes:
        payload = bytes(payload)
    qos = msg.qos
    props = from_paho_properties(msg.properties) if v5 else None
    if not v5 and payload[:1] == b"\xff" and payload.startswith(ENVELOPE_MAGIC):
        unpacked = unpack_envelope(payload)
        if unpacked is not None:
            response_topic, correlation, payload = unpacked
            props = MessageProperties(response_topic=response_topic, correlation_data=correlation)
    return MQTTMessage(topic, payload, _QOS[qos], bool(msg.retain), msg.mid if qos else None, props)


def send_subscribe(client: paho.Client, v5: bool, topic_filter: str, spec: Spec) -> int | None:
    """Send a SUBSCRIBE (with MQTT 5 options and identifier); its packet id, or None."""
    qos, no_local, retain_as_published, retain_handling, sub_id = spec
    if v5:
        options = SubscribeOptions(
            qos=qos,
            noLocal=no_local,
            retainAsPublished=retain_as_published,
            retainHandling=retain_handling,
        )
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            props.SubscriptionIdentifier = sub_id
        rc, mid = client.subscribe(topic_filter, options=options, properties=props)
    else:
        rc, mid = client.subscribe(topic_filter, qos)
    return mid if rc == _SUCCESS else None


def send_unsubscribe(client: paho.Client, topic_filter: str) -> int | None:
    """Send an UNSUBSCRIBE; its packet id, or None."""
    rc, mid = client.unsubscribe(topic_filter)
    return mid if rc == _SUCCESS else None


# -- QoS 0 PUBLISH packets ----------------------------------------------------------------------


def encode_publish0(topic: bytes, payload: bytes, retain: bool, v5: bool) -> bytearray:
    """The bytes of a QoS 0 PUBLISH packet without properties (MQTT 3.1.1 §3.3, MQTT 5 §3.3).

    Fixed header (type 3, flags: retain only), remaining length (variable byte integer), topic
    (two-byte length + UTF-8), for MQTT 5 an empty property list, then the payload. A QoS 0
    PUBLISH has no packet id and leaves no state behind, so paho's ``publish()`` bookkeeping
    (a packet id, an ``MQTTMessageInfo`` with its condition variable, a debug log record:
    about 10 µs a message) buys nothing here. ``tests/mqtt/test_mqtt_paho_internals.py``
    checks these bytes against paho's own encoder.
    """
    remaining = 2 + len(topic) + len(payload) + (1 if v5 else 0)
    packet = bytearray(b"\x31" if retain else b"\x30")
    while remaining > 0x7F:
        packet.append((remaining & 0x7F) | 0x80)
        remaining >>= 7
    packet.append(remaining)
    packet += len(topic).to_bytes(2, "big")
    packet += topic
    if v5:
        packet.append(0)
    packet += payload
    return packet


# -- the paho client with buffered I/O and protocol fixes ---------------------------------------


class _BufferedClient(paho.Client):
    """paho's client with read/write buffering, safe packet ids and a PUBREL fix (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rbuf = b""
        self.rpos = 0
        self.drained = False
        self.short_read = False
        self.wbuf = bytearray()
        self.closing_hook: Callable[[int], None] | None = None
        self.socket_created_hook: Callable[[Any], None] | None = None
        self.socket_replace_hook: Callable[[Callable[[], ssl.SSLSocket]], ssl.SSLSocket] | None = (
            None
        )
        self.final_flush_timeout = 1.0

    # reads: one large recv, then paho's small reads come from the buffer
    def _sock_recv(self, bufsize: int) -> bytes:
        rbuf = self.rbuf
        pos = self.rpos
        if pos >= len(rbuf):
            try:
                rbuf = super()._sock_recv(_READ_SIZE)
            except BlockingIOError:
                self.drained = True
                raise
            if not rbuf:
                return rbuf
            # less than asked for: the kernel had no more just now, so once this is parsed the
            # loop goes back to waiting instead of making a recv() that fails with EAGAIN
            self.short_read = len(rbuf) < _READ_SIZE
            pos = 0
            self.rbuf = rbuf
        end = pos + bufsize
        self.rpos = end
        if pos == 0 and end >= len(rbuf):
            self.rbuf = b""
            self.rpos = 0
            return rbuf
        return rbuf[pos:end]

    def buffered_input(self) -> bool:
        """Whether bytes already read from the socket are waiting to be parsed."""
        if self.rpos < len(self.rbuf):
            return True
        sock = self._sock
        pending = getattr(sock, "pending", None)
        return bool(pending is not None and pending())

    # writes: collected, and sent by flush_output() once per loop round
    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        wbuf = self.wbuf
        if len(wbuf) >= _WRITE_HIGH_WATER:
            self.flush_output()
            if len(wbuf) >= _WRITE_HIGH_WATER:
                raise BlockingIOError
        wbuf += buf
        return len(buf)

    def flush_output(self) -> None:
        """Write as much of the collected output as the socket takes without blocking."""
        wbuf = self.wbuf
        while wbuf:
            try:
                sent = super()._sock_send(wbuf)
            except BlockingIOError:
                return
            except OSError as exc:  # the connection is gone; the next read reports it
                _log.debug("MQTT socket write failed: %r", exc)
                wbuf.clear()
                return
            if sent <= 0:  # the WebSocket wrapper wrote part of a frame: try again later
                return
            del wbuf[:sent]

    def _final_flush(self) -> None:
        deadline = time.monotonic() + self.final_flush_timeout
        sock = self._sock
        while self.wbuf and sock is not None:
            self.flush_output()
            remaining = deadline - time.monotonic()
            if not self.wbuf or remaining <= 0:
                return
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLOUT)
            poller.poll(int(remaining * 1000) + 1)

    def _sock_close(self) -> None:
        sock = self._sock
        if sock is not None:
            if self.wbuf:
                with contextlib.suppress(OSError):
                    self._final_flush()
            if self.closing_hook is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.closing_hook(sock.fileno())
        self.wbuf = bytearray()
        self.rbuf = b""
        self.rpos = 0
        super()._sock_close()

    # every message goes to on_message: paho's per-topic callback lookup (a topic matcher walk
    # and two locks per message) has nothing to find, since trionet adds no topic callbacks
    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        on_message = self._on_message
        if on_message is not None:
            on_message(self, self._userdata, message)

    # a PUBACK/PUBCOMP without reason code or properties (every one in MQTT 3.1.1, a success in
    # MQTT 5) completes its publish without paho decoding a ReasonCode and a Properties object
    # for it (Properties() alone builds several dicts): the shared success values stand in
    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        self._easy_log(paho.MQTT_LOG_DEBUG, "Received %s (Mid: %d)", cmd, mid)
        if mid in self._out_messages:
            return self._do_on_publish(mid, _ACK_SUCCESS, _NO_ACK_PROPERTIES)
        return _SUCCESS

    # never reuse a packet id that is still in flight
    def _mid_generate(self) -> int:
        mid = super()._mid_generate()
        in_flight = self._out_messages
        while mid in in_flight:
            mid = super()._mid_generate()
        return mid

    # answer a PUBREL for an already delivered QoS 2 message (paho stays silent with manual_ack)
    def _handle_pubrel(self) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        mid = struct.unpack_from("!H", packet)[0] if len(packet) >= 2 else None
        known = mid in self._in_messages
        rc = super()._handle_pubrel()
        if rc == _SUCCESS and mid is not None and not known and self._manual_ack:
            rc = self._send_pubcomp(mid)
        return rc

    # a PUBREC with a reason code of 0x80 or above ends a QoS 2 exchange (MQTT 5 §4.3.3,
    # §3.5.2.1): no PUBREL; the publish completes as refused. paho ignores the reason code and
    # sends PUBREL anyway, so that the broker's PUBCOMP made a refused message look delivered.
    def _handle_pubrec(self) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if self._protocol == paho.MQTTv5 and len(packet) >= 3 and packet[2] >= 0x80:
            mid = (packet[0] << 8) | packet[1]
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received PUBREC (Mid: %d, reason 0x%02x)",
                           mid, packet[2])
            if mid in self._out_messages:
                code = ReasonCode(PacketTypes.PUBREC, identifier=packet[2])
                return self._do_on_publish(mid, code, _NO_REC_PROPERTIES)
            return _SUCCESS
        return super()._handle_pubrec()

    # close the socket when a TLS or WebSocket handshake fails (paho leaks it)
    def _ssl_wrap_socket(self, tcp_sock: Any) -> ssl.SSLSocket:
        context = self._ssl_context
        assert context is not None

        def wrap() -> ssl.SSLSocket:
            return context.wrap_socket(
                tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
            )

        try:
            # (wrapping detaches the TCP socket object: an interrupter must switch over to the
            # SSL socket atomically, or an interruption in between would be lost)
            replace = self.socket_replace_hook
            ssl_sock = wrap() if replace is None else replace(wrap)
        except BaseException:
            tcp_sock.close()
            raise
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock

    def _create_socket(self) -> Any:
        sock: Any = self._create_socket_connection()
        try:
            if self.socket_created_hook is not None:
                self.socket_created_hook(sock)  # from here on, the handshakes can be interrupted
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # MQTT packets are small and answered one by one: do not let Nagle hold them
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl:
                sock = self._ssl_wrap_socket(sock)
            if self._transport == "websockets":
                sock.settimeout(self._connect_timeout)
                return paho._WebsocketWrapper(
                    socket=sock,
                    host=self._host,
                    port=self._port,
                    is_ssl=self._ssl,
                    path=self._websocket_path,
                    extra_headers=self._websocket_extra_headers,
                )
        except BaseException:
            sock.close()
            raise
        return sock


class _AuthClient(_BufferedClient):
    """With an authenticator: AUTH packets go to the engine (paho treats them as a protocol
    error), and a packet whose handling failed the exchange closes the connection with
    nothing more sent (see :mod:`trionet.mqtt._paho_auth`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth_packet: Callable[[bytearray], MQTTErrorCode] | None = None
        self.auth_connack: Callable[[bytearray], None] | None = None
        self.auth_abort = False

    def _packet_handle(self) -> MQTTErrorCode:
        command = self._in_packet["command"] & 0xF0
        if command == PacketTypes.AUTH << 4 and self.auth_packet is not None:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received AUTH")
            rc = self.auth_packet(self._in_packet["packet"])
        else:
            if command == paho.CONNACK and self.auth_connack is not None:
                self.auth_connack(self._in_packet["packet"])
            rc = super()._packet_handle()
        if self.auth_abort:
            self.auth_abort = False
            self.wbuf.clear()
            self._out_packet.clear()
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        return rc


def _client_class(settings: EngineSettings) -> type[_BufferedClient]:
    return _BufferedClient if settings.authenticator is None else _AuthClient


# -- the engine ---------------------------------------------------------------------------------

Wait = Callable[[list[int], list[int], "float | None"], tuple[list[int], list[int]]]


def _no_wait(readable: list[int], writable: list[int], timeout: float | None
             ) -> tuple[list[int], list[int]]:
    raise RuntimeError("this engine is driven by trio, not by a network thread")


class PahoEngine(EngineAuth):
    """Drives one paho client; one thread at a time calls its methods (see the module docstring).

    Args:
        settings: connection settings.
        emit: called on the owner with a list of events, once per loop round that produced any
            (it must not block: it hands the batch to trio).
        wait: waits for socket readiness on the owner (``LoopThread.wait``); not used when
            trio drives the engine.
        on_socket_close: called with the file descriptor just before the connection's socket is
            closed (trio's driver calls ``trio.lowlevel.notify_closing`` there).
        final_flush_timeout: how long closing may block to write what is still buffered (a
            DISCONNECT); 0 when trio drives the engine (one non-blocking attempt).
        transit_limit: received messages that may be on their way to trio at once.
    """

    def __init__(
        self,
        settings: EngineSettings,
        emit: Callable[[list[Event]], None],
        wait: Wait = _no_wait,
        *,
        on_socket_close: Callable[[int], None] | None = None,
        final_flush_timeout: float = 1.0,
        transit_limit: int = 1000,
    ) -> None:
        self._on_socket_close = on_socket_close
        self._final_flush_timeout = final_flush_timeout
        self._s = settings
        self._emit = emit
        self._wait = wait
        self._v5 = settings.protocol == 5
        self._events: list[Event] = []
        self._client = self._make_client()
        #: Raised by trio to stop reading while its buffers are full (it wakes the owner when
        #: it lowers the flag).
        self.read_paused = CrossThreadFlag()
        #: Messages handed to trio and not routed yet: reading stops while ``transit.limit``
        #: are on their way, so the owner never runs more than that ahead of trio (which wakes
        #: it once it has caught up: ``transit.take_waiting()``).
        self.transit = TransitWindow(transit_limit)
        self._gen = 0
        self._connected = False
        self._connecting: int | None = None
        self._connection_attempt: int | None = None
        self._interrupter: SocketInterrupter | None = None
        self._refused = False
        self._intentional = False
        self._window = settings.max_inflight
        self._limits = limits_from_connack(None, settings.max_packet_size)
        self._inflight = 0
        self._need_pump = False
        self._outbox: deque[tuple[str, bytes, int, bool, Properties | None, Waiter]] = deque()
        self._pub_waiters: dict[int, tuple[Waiter, str]] = {}
        self._subs = SubscriptionBook(
            lambda topic_filter, spec: send_subscribe(self._client, self._v5, topic_filter, spec),
            lambda topic_filter: send_unsubscribe(self._client, topic_filter),
            self._events_append,
        )
        self._credits = 0
        self._misc_interval = min(1.0, max(0.05, settings.keepalive / 4)) if (
            settings.keepalive
        ) else 1.0
        self._next_misc = 0.0
        self._init_auth()

    # -- construction ---------------------------------------------------------------------------

    def _make_client(self) -> _BufferedClient:
        s = self._s
        if self._v5:
            client = _client_class(s)(
                CallbackAPIVersion.VERSION2,
                client_id=s.client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
                transport="websockets" if s.transport == "websockets" else "tcp",
                reconnect_on_failure=False,
                manual_ack=True,
            )
        else:
            client = _BufferedClient(
                CallbackAPIVersion.VERSION2,
                client_id=s.client_id,
                clean_session=s.clean_start,
                protocol=MQTTProtocolVersion.MQTTv311,
                transport="websockets" if s.transport == "websockets" else "tcp",
                reconnect_on_failure=False,
                manual_ack=True,
            )
        client.enable_logger(logging.getLogger("trionet.mqtt.paho"))
        client.closing_hook = self._on_socket_close
        client.socket_created_hook = self._socket_created
        client.socket_replace_hook = self._socket_replaced
        client.final_flush_timeout = self._final_flush_timeout
        # trionet keeps its own in-flight window (see _pump): paho sends what it is given.
        client.max_inflight_messages = 0
        client.connect_timeout = s.connect_timeout
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set_context(s.tls)
        if s.transport == "websockets":
            client.ws_set_options(path=s.websocket_path, headers=s.websocket_headers)
        if s.will is not None:
            will = s.will
            client.will_set(
                will.topic,
                will.payload,
                int(will.qos),
                will.retain,
                to_paho_properties(will.properties, PacketTypes.WILLMESSAGE)
                if self._v5
                else None,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        self._auth_hook(client)
        return client

    def reconfigure(self, settings: EngineSettings) -> None:
        """Rebuild the paho client with new settings (only before the first connection)."""
        self._s = settings
        self._v5 = settings.protocol == 5
        self._client = self._make_client()

    @property
    def pending_publishes(self) -> int:
        """QoS 1/2 publishes not yet acknowledged (read from trio: a racy snapshot)."""
        return len(self._pub_waiters) + len(self._outbox)

    # -- the loop -------------------------------------------------------------------------------

    # The loop is made of the pieces below, so that the network thread (step) and the
    # thread-free trio driver (trionet.mqtt._driver) can both run it.

    def socket_fd(self) -> int | None:
        """The connection's file descriptor, or None when not connected."""
        sock = self._client._sock
        return None if sock is None else sock.fileno()

    def wants_read(self) -> bool:
        """Whether to read now (False while trio's buffers are full)."""
        return not self.read_paused.is_set() and not self.transit.full()

    def wants_write(self) -> bool:
        """Whether output is waiting for the socket to become writable."""
        c = self._client
        return bool(c.wbuf) or c.want_write()

    def has_buffered_input(self) -> bool:
        """Whether input was read already but not parsed yet (no need to wait for the fd)."""
        return self._client.buffered_input()

    @property
    def misc_interval(self) -> float:
        """How often :meth:`misc` (keepalive) should run."""
        return self._misc_interval

    def flush_output(self) -> None:
        """Pump the in-flight window and write what is collected, without blocking."""
        if self._need_pump:
            self._need_pump = False
            self._pump()
        if self._client.wbuf:
            self._client.flush_output()

    def write_round(self) -> None:
        """The socket is writable: write collected output and paho's queued packets."""
        c = self._client
        c.flush_output()
        if c.want_write():
            c.loop_write()
            c.flush_output()

    def read_round(self) -> None:
        """The socket is readable (or input is buffered): parse what is there."""
        self._read()

    def misc(self) -> None:
        """Keepalive: send PINGREQ when due, drop the connection if the broker went silent."""
        if self._client._sock is not None:
            self._client.loop_misc()
        self._next_misc = time.monotonic() + self._misc_interval

    def _events_append(self, event: Event) -> None:
        self._events.append(event)

    def take_events(self) -> list[Event]:
        """Remove and return the events collected so far."""
        if self._credits:
            self._events.append(Credit(self._credits))
            self._credits = 0
        events = self._events
        self._events = []
        return events

    def step(self) -> None:
        """One round of the network thread: write, hand events to trio, wait, read, keepalive."""
        self.flush_output()
        if self._events or self._credits:
            self._flush_events()
        fd = self.socket_fd()
        if fd is None:
            self._wait([], [], None)
            return
        reading = self.wants_read()
        timeout = max(0.0, self._next_misc - time.monotonic())
        buffered = reading and self.has_buffered_input()
        if buffered:
            timeout = 0.0
        readable, writable = self._wait(
            [fd] if reading else [], [fd] if self.wants_write() else [], timeout
        )
        if writable:
            self.write_round()
        if readable or buffered:
            self._read()
        if time.monotonic() >= self._next_misc:
            self.misc()

    def _read(self) -> None:
        c = self._client
        c.drained = False
        c.short_read = False
        for _ in range(_MAX_READS_PER_ROUND):
            rc = c.loop_read()
            if (
                rc != _SUCCESS
                or c._sock is None
                or c.drained
                or (c.short_read and not c.buffered_input())
                or self.read_paused.is_set()
                or self.transit.full()
            ):
                break
        if self._need_pump:
            self._need_pump = False
            self._pump()

    def _flush_events(self) -> None:
        self._emit(self.take_events())

    def shutdown(self) -> None:
        """Close the connection without a DISCONNECT and fail what is pending (thread exit)."""
        c = self._client
        self._connected = False
        self._fail_all("the MQTT client is closed")
        c.wbuf.clear()
        c._reset_sockets()
        if self._events or self._credits:
            self._flush_events()

    # -- paho callbacks (run inside paho calls made by the methods here) ------------------------

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        attempt = self._connecting
        if reason_code.is_failure:
            self._refused = True
            self._events.append(
                Connack(attempt, False, reason_code.value, reason_name(reason_code), False,
                        self._limits)
            )
            return
        if not self._auth_connack(properties):
            return  # (the broker failed to prove itself: _AuthClient closes the connection)
        self._connection_attempt = attempt
        self._connecting = None
        self._connected = True
        self._gen += 1
        limits = self._limits = limits_from_connack(
            properties if self._v5 else None, self._s.max_packet_size
        )
        self._window = max(1, min(self._s.max_inflight, limits.receive_maximum))
        session_present = bool(flags.session_present)
        self._events.append(
            Connack(attempt, True, reason_code.value, reason_name(reason_code),
                    session_present, limits)
        )
        if limits != BrokerLimits():
            self._drop_unsendable()
        self._subs.restore(session_present)
        self._need_pump = True

    def _drop_unsendable(self) -> None:
        """Fail the publishes waiting to be resent that this broker's limits forbid.

        paho resends them right after this callback returns; an oversize one would make the
        broker close the connection again, on every reconnect.
        """
        out = self._client._out_messages
        for mid, msg in list(out.items()):
            if msg.state == paho.mqtt_ms_wait_for_pubcomp:
                continue  # only a PUBREL is left to send
            violation = limit_violation(self._limits, msg.topic, msg.payload, msg.qos,
                                        msg.retain, msg.properties, self._v5)
            if violation is None:
                continue
            del out[mid]
            entry = self._pub_waiters.pop(mid, None)
            if entry is not None:
                self._inflight -= 1
                self._events.append(NotSent(entry[0], violation[0], violation[1], entry[1]))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        was_connected = self._connected
        self._connected = False
        self._auth_lost(reason_code.value)
        if self._connecting is not None:
            attempt = self._connecting
            self._connecting = None
            if not self._refused:
                self._events.append(
                    ConnectFailed(attempt, None,
                                  f"the broker closed the connection before CONNACK "
                                  f"({reason_name(reason_code)})")
                )
            return
        if not was_connected:
            return
        self._subs.requeue_after_loss()
        self._events.append(Lost(reason_code.value, reason_name(reason_code), self._intentional))

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        entry = self._pub_waiters.pop(mid, None)
        if entry is None:  # a QoS 0 message was written: nobody waits for that
            return
        self._inflight -= 1
        if self._outbox:
            self._need_pump = True
        self._events.append(Acked(entry[0], reason_code.value, reason_name(reason_code), entry[1]))

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: list[ReasonCode],
        properties: Any,
    ) -> None:
        code = reason_codes[0] if reason_codes else ReasonCode(PacketTypes.SUBACK, "Granted QoS 0")
        self._subs.on_suback(mid, code.value, reason_name(code))

    def _on_unsubscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: list[ReasonCode],
        properties: Any,
    ) -> None:
        if reason_codes:
            self._subs.on_unsuback(mid, reason_codes[0].value, reason_name(reason_codes[0]))
        else:
            self._subs.on_unsuback(mid, 0, "success")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        qos = msg.qos
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            _log.warning("dropping an MQTT message whose topic is not UTF-8: %r", msg._topic)
            if qos:
                client.ack(msg.mid, qos)
            return
        message = to_message(msg, topic, self._v5)
        self.transit.sent()
        received = (message, (self._gen, msg.mid, qos) if qos else None)
        events = self._events
        if events and type(last := events[-1]) is Messages:
            last.received.append(received)
        else:
            events.append(Messages([received]))

    # -- subscriptions (kept by the SubscriptionBook) -----------------------------------------

    def subscribe(
        self,
        waiters: list[Waiter],
        topic_filter: str,
        qos: int,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: int,
        sub_id: int | None,
    ) -> None:
        """Subscribe (now, or as soon as connected); SUBACK comes back as SubAck."""
        self._subs.subscribe(self._connected, waiters, topic_filter,
                             (qos, no_local, retain_as_published, retain_handling, sub_id))

    def unsubscribe(self, waiter: Waiter, topic_filter: str) -> None:
        """Unsubscribe; UNSUBACK comes back as UnsubAck (at once when not connected)."""
        self._subs.unsubscribe(self._connected, waiter, topic_filter)

    # -- publishing -----------------------------------------------------------------------------

    def publish0(
        self, topic: str, payload: bytes, retain: bool, props: Properties | None,
        counted: bool = True,
    ) -> None:
        """Publish at QoS 0 (fire and forget; dropped when not connected).

        *counted*: the message was queued for the owner under one of trio's QoS 0 credits;
        give it back (Credit). Not counted when trio runs the call itself.
        """
        if counted:
            self._credits += 1
        if self._connected:
            violation = limit_violation(self._limits, topic, payload, 0, retain, props, self._v5)
            if violation is not None:  # (trio checks first; the limits changed meanwhile)
                _log.warning("dropping a QoS 0 message for %r: %s", topic, violation[1])
                return
            client = self._client
            if props is None and not client._out_packet and len(client.wbuf) < _WRITE_HIGH_WATER:
                # (nothing queued inside paho that this packet could overtake)
                client.wbuf += encode_publish0(topic.encode(), payload, retain, self._v5)
                client._last_msg_out = time.monotonic()  # what paho's keepalive looks at
                return
            # paho would build a PUBACK ReasonCode and Properties per QoS 0 packet just to call
            # on_publish, which has nothing to do for QoS 0: switch it off meanwhile.
            client._on_publish = None
            try:
                client.publish(topic, payload, 0, retain, props)
            except (ValueError, TypeError) as exc:  # validated by trio first; never expected
                _log.error("paho refused a QoS 0 publish to %r: %s", topic, exc)
            finally:
                client._on_publish = self._on_publish

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties | None,
        waiter: Waiter,
    ) -> None:
        """Publish at QoS 1/2; completion comes back as Acked."""
        if self._inflight < self._window and not self._outbox:
            self._send(topic, payload, qos, retain, props, waiter)
        else:
            self._outbox.append((topic, payload, qos, retain, props, waiter))

    def publish_batch(
        self, items: list[tuple[str, bytes, int, bool, Properties | None]], waiter: Waiter
    ) -> None:
        """Publish many messages; QoS 0 ones are reported together as one AckedMany."""
        written = 0
        client = self._client
        outbox = self._outbox
        for topic, payload, qos, retain, props in items:
            if qos == 0:
                written += 1
                violation = limit_violation(self._limits, topic, payload, 0, retain, props,
                                            self._v5)
                if violation is not None:
                    _log.warning("dropping a QoS 0 message for %r: %s", topic, violation[1])
                elif self._connected:
                    client._on_publish = None  # see publish0
                    try:
                        client.publish(topic, payload, 0, retain, props)
                    finally:
                        client._on_publish = self._on_publish
            elif self._inflight < self._window and not outbox:
                self._send(topic, payload, qos, retain, props, waiter)
            else:
                outbox.append((topic, payload, qos, retain, props, waiter))
        if written:
            self._events.append(AckedMany(waiter, written))

    def _send(
        self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties | None,
        waiter: Waiter,
    ) -> None:
        violation = limit_violation(self._limits, topic, payload, qos, retain, props, self._v5)
        if violation is not None:
            self._events.append(NotSent(waiter, violation[0], violation[1], topic))
            return
        try:
            info = self._client.publish(topic, payload, qos, retain, props)
        except (ValueError, TypeError) as exc:
            self._events.append(Failed([waiter], f"paho refused the message: {exc}"))
            return
        if info.rc in (_SUCCESS, _NO_CONN):  # not connected: paho sends it after reconnecting
            self._inflight += 1
            self._pub_waiters[info.mid] = (waiter, topic)
        else:
            self._events.append(Failed([waiter], paho.error_string(info.rc)))

    def _pump(self) -> None:
        outbox = self._outbox
        while outbox and self._inflight < self._window:
            self._send(*outbox.popleft())

    def ack(self, tokens: list[AckToken]) -> None:
        """Acknowledge received QoS 1/2 messages (PUBACK / PUBCOMP).

        Tokens from an earlier connection are dropped: the broker resends those messages (QoS 1)
        or their PUBREL (QoS 2, answered by the PUBREL fix above).
        """
        if not self._connected:
            return
        gen = self._gen
        client = self._client
        for token_gen, mid, qos in tokens:
            if token_gen == gen:
                client.ack(mid, qos)

    # -- connection -----------------------------------------------------------------------------

    def connect(self, attempt: int, host: str, port: int, first: bool) -> None:
        """Open the network connection (blocking) and send CONNECT; the answer comes as
        Connack, or ConnectFailed."""
        client = self._client
        self._connecting = attempt
        self._refused = False
        self._intentional = False
        interrupter = self._interrupter = SocketInterrupter()
        try:
            if first:
                if self._v5:
                    client.connect(
                        host,
                        port,
                        self._s.keepalive,
                        clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY
                        if self._s.clean_start
                        else False,
                        properties=self._auth_begin(connect_properties(self._s)),
                    )
                else:
                    client.connect(host, port, self._s.keepalive)
            else:
                self._auth_reconnect(client, connect_properties(self._s))
                client.reconnect()
        except Exception as exc:  # OSError, ssl.SSLError, WebsocketConnectionError, ValueError
            self._connecting = None
            client._sock_close()
            error: BaseException = exc
            if interrupter.interrupted:
                error = InterruptedError("the connection attempt was abandoned")
            self._events.append(ConnectFailed(attempt, error, str(error) or repr(error)))
            return
        finally:
            self._interrupter = None
        self._next_misc = time.monotonic() + self._misc_interval

    def _socket_created(self, sock: Any) -> None:
        interrupter = self._interrupter
        if interrupter is not None:
            interrupter.attach(sock)  # InterruptedError if abandoned already

    def _socket_replaced(self, make: Callable[[], ssl.SSLSocket]) -> ssl.SSLSocket:
        interrupter = self._interrupter
        return make() if interrupter is None else interrupter.replace(make)

    def interrupt_connect(self) -> None:
        """Abandon a connection attempt blocked in a TLS or WebSocket handshake (any thread).

        The TCP connect itself cannot be interrupted; it ends within ``connect_timeout``.
        """
        interrupter = self._interrupter
        if interrupter is not None:
            interrupter.interrupt()

    def abort_connect(self, attempt: int) -> None:
        """Give up a connection attempt that got no CONNACK in time (or whose CONNACK came
        after trio stopped waiting): close it without any event."""
        if self._connecting == attempt:
            self._connecting = None
            self._client._sock_close()
        elif self._connected and self._connection_attempt == attempt:
            self._connected = False
            self._client._sock_close()
            self._subs.requeue_after_loss()

    def disconnect(self, waiter: Waiter, reason: str) -> None:
        """Send DISCONNECT and close; pending publishes fail (Failed), then Done."""
        self._intentional = True
        client = self._client
        if self._connected:
            client.disconnect()
            client.flush_output()
        self._connecting = None
        self._connected = False
        client._sock_close()
        self._fail_all(reason)
        self._events.append(Done(waiter, None))

    def abandon(self, reason: str) -> None:
        """Fail every pending operation: the client will not reconnect."""
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        waiters: list[Waiter] = [entry[0] for entry in self._pub_waiters.values()]
        waiters.extend(item[5] for item in self._outbox)
        waiters.extend(self._subs.take_waiters())
        self._pub_waiters.clear()
        self._outbox.clear()
        self._inflight = 0
        self._client.drop_out_messages()
        self._auth_lost(None)
        if waiters:
            self._events.append(Failed(waiters, reason))
