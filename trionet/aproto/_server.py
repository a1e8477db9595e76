"""The AsyncAProto server: a trio driver around the sans-I/O packet codec.

Theory of operation
-------------------
Each connection runs one task (:meth:`Server._handle`). It reads through a
``trionet.framing._driver.StreamDriver`` (up to ``buf`` bytes at once),
feeds the bytes to its :class:`~trionet.aproto._packet.PacketDecoder` and dispatches every packet
the bytes complete, in order, before reading again. So packets are answered in the order they
arrive, any split of the bytes is parsed exactly, and a client that pipelines is throttled by
TCP, not by an unbounded queue.

Replies to packets that arrived together are *corked*: while later packets of the same batch are
still waiting to be dispatched, :meth:`HandlerClient.send` only queues the reply; the batch's
replies go out in one ``writev`` when the last packet of the batch sends its reply (or when
64 KiB are queued, or the batch is done). A request that arrives alone is answered at once.

Timeouts do not cost a cancel scope, nor even a clock read, per packet. Each connection has one
cancel scope (whose deadline is the optional ``session_timeout``) and records the reaper's tick
count when it starts waiting for a packet or starts a send; one reaper task per server ticks
every ``timeout / 10`` (at most every second) and cancels the connections that have waited, or
been sending, for more than ``timeout`` (so an idle timeout fires between ``timeout`` and
``timeout`` + two ticks). A connection whose handler is running is never timed out (the
handler's own work is not "idle").

Every way a connection ends goes through :meth:`Server._handle`'s ``finally``: the session is
unregistered and the stream closed. When the server closes a connection that may still have
unread input (an error reply, close-after-reply mode, ``client.close()``), it shuts down its
sending side and discards input until the peer closes (for at most 2 seconds) before closing:
closing a socket with unread data makes the kernel send RST, which can destroy the reply the
client has not read yet.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import inspect
import logging
import math
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import trio

from .. import metrics as _metrics, tracing as _tracing
from .._threads import TrioPortal, in_main_thread
from .._tls import server_tls_source
from .._util import reraise_single
from ..errors import ConfigurationError
from ..framing._driver import StreamDriver
from ..observability import set_correlation_id
from ..tls import ServerTLSArgument
from ._config import read_config, read_env, validate_option
from ._errors import StopPropagation
from ._filters import Filter, IPAddress, normalize_ip
from ._packet import (
    DEFAULT_MAX_PACKET_SIZE,
    ERR_HEADER_INVALID,
    ERR_SESSION_LIMIT_REACHED,
    ERR_TIMED_OUT,
    ByteOrder,
    Encoding,
    Packet,
    PacketDecoder,
    PacketEncoder,
)
from ._sessions import Session, SessionRegistry
from ._util import run_sync_task

__all__ = ["Handler", "HandlerClient", "HandlerFunction", "Server"]

T = TypeVar("T")

#: What a handler is: ``async def handler(client, packet) -> None``.
HandlerFunction = Callable[["HandlerClient", Packet], Awaitable[Any]]

_WAITING: Final = 0
_BUSY: Final = 1
_SENDING: Final = 2

#: Queued replies above this size are written even if the batch is not finished.
_CORK_LIMIT: Final = 65536
#: How long a closing connection waits for the peer to close before closing anyway.
_LINGER: Final = 2.0
#: Bound on sending an error reply to a peer that may not be reading.
_ERROR_REPLY_TIMEOUT: Final = 5.0
#: Default bound on the bytes of unfinished packets held across all connections: 64 MiB.
DEFAULT_MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
#: Bytes a plain-TCP connection's first read is extended to, to recognise a TLS ClientHello.
_SNIFF_SIZE: Final = 7


def _tls_client_hello_prefix(data: bytes | bytearray) -> bool | None:
    """Whether *data*, a connection's first bytes, start a TLS ClientHello.

    True/False once :data:`_SNIFF_SIZE` bytes are there; None while *data* is shorter and could
    still be one. A ClientHello starts with a handshake record (``0x16``), a record version
    ``0x03 0x0?``, a 2-byte record length, the handshake type 1 and the high byte of a 3-byte
    handshake length (0: a ClientHello is far below 64 KiB). No valid AsyncAProto packet starts
    that way, whatever the header size and byte order: the Protocol-Version byte or the first
    payload byte would be wrong, or the Content-Length would exceed a terabyte.
    """
    n = len(data)
    if n == 0:
        return False
    if data[0] != 0x16 or (n > 1 and data[1] != 0x03) or (n > 2 and data[2] > 0x0F):
        return False
    if (n > 5 and data[5] != 0x01) or (n > 6 and data[6] != 0x00):
        return False
    return True if n >= _SNIFF_SIZE else None


@dataclasses.dataclass
class ServerStatistics:
    """Counters of a :class:`Server` (see :meth:`Server.statistics`).

    Attributes:
        connections: connections accepted since the server started.
        open_sessions: connections being served now.
        busy_sessions: of those, the ones handling packets right now (in flight).
        packets: packets dispatched to handlers.
        rejected: bad packets answered with an error reply.
        handler_errors: handler calls that raised (each closed its connection).
        timeouts: sessions closed with ``ERR_TIMED_OUT``.
        pending_bytes: bytes of unfinished packets the server holds now, across connections
            (bounded by ``max_pending_bytes``).
    """

    connections: int = 0
    open_sessions: int = 0
    busy_sessions: int = 0
    packets: int = 0
    rejected: int = 0
    handler_errors: int = 0
    timeouts: int = 0
    pending_bytes: int = 0


def _configured_tls(tls: ServerTLSArgument, certfile: Any, keyfile: Any) -> ServerTLSArgument:
    """*tls*, or the context of the configuration's ``certfile``/``keyfile`` if it has them."""
    if keyfile is not None and certfile is None:
        raise ConfigurationError("keyfile is set but certfile is not")
    if certfile is None:
        return tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load certfile/keyfile: {exc}") from exc
    return context


class HandlerClient:
    """The connection a packet came from, as handlers see it (the original's ``core.Client``).

    One object per connection, created by the server.

    Attributes:
        address: the peer's IP address as a string (IPv4-mapped IPv6 addresses are shown as
            IPv4). The original used the server's own address here.
        port: the peer's port.
        ip: ``address`` as an :mod:`ipaddress` object.
        session: the connection's :class:`Session`.
        encoding: the encoding of the latest packet received (before the first one, the
            server's ``encoding``); packets built with ``encoding=None`` are sent in it.
        server: the :class:`Server`.
    """

    __slots__ = (
        "_cancel_reason",
        "_closing",
        "_corked",
        "_failed",
        "_held",
        "_io",
        "_lot",
        "_scope",
        "_since",
        "_state",
        "_stream",
        "_writing",
        "address",
        "encoding",
        "ip",
        "port",
        "server",
        "session",
    )

    def __init__(
        self, server: Server, stream: trio.abc.Stream, ip: IPAddress, port: int
    ) -> None:
        self.server = server
        self.ip = ip
        self.address = str(ip)
        self.port = port
        self.encoding: Encoding = server.encoding
        self.session: Session = Session(uuid.uuid4(), self, time.time())
        self._stream = stream
        self._io = StreamDriver(stream, receive_size=server.buf)
        self._corked = False
        self._closing = False
        self._failed = False
        self._held = 0
        self._writing = False
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._state = _WAITING
        self._since = 0
        self._scope: trio.CancelScope | None = None
        self._cancel_reason: str | None = None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the connection is shutting down."""
        return self._closing

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The verified certificate the client presented over TLS (mutual TLS), as
        :meth:`ssl.SSLSocket.getpeercert` gives it; None over plain TCP or without one."""
        if isinstance(self._stream, trio.SSLStream):
            cert: dict[str, Any] | None = self._stream.getpeercert()
            return cert or None
        return None

    async def send(self, packet: Packet | Mapping[Any, Any], close: bool = False) -> None:
        """Send a packet to this client.

        Args:
            packet: a :class:`Packet` (sent in its encoding, or in :attr:`encoding` if it has
                none) or a mapping (sent in :attr:`encoding`).
            close: close the connection right after sending (see :meth:`close`). Leave it False
                to let handlers in later groups run.

        Raises:
            trio.ClosedResourceError: the connection was closed with :meth:`close`.
            trio.BrokenResourceError: the peer is gone.
            CodecError: the packet's fields cannot be encoded.
            FrameTooLarge: the packet exceeds the server's ``max_packet_size``.
        """
        if type(packet) is Packet:
            data = self.server._encoder.encode(packet.fields, packet.encoding or self.encoding)
        elif isinstance(packet, (Packet, Mapping)):
            fields = packet.fields if isinstance(packet, Packet) else packet
            encoding = packet.encoding if isinstance(packet, Packet) else None
            data = self.server._encoder.encode(fields, encoding or self.encoding)
        else:
            raise TypeError(f"send() needs a Packet or a mapping, not {type(packet).__name__}")
        if self._corked and not self._closing:
            # a reply within a batch (the hot path, inlined from _write): queued, written with
            # the batch's others in one writev unless the queue grew past _CORK_LIMIT
            io = self._io
            io.out.append(data)
            io.out_bytes += len(data)
            if io.out_bytes >= _CORK_LIMIT:
                await self._send_all(None)
        else:
            await self._write(data)
        if close:
            await self.close()

    async def close(self) -> None:
        """Close the connection.

        Queued replies are written, then the server's sending side is shut down, so the peer
        sees the end of the stream at once. The dispatch of the current packet stops after the
        running handler returns (later groups are skipped), and the connection is closed. It is
        safe to call more than once, and from another connection's handler.
        """
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        if self._state == _WAITING and self._scope is not None:
            # Closed from another connection's handler while this one waits for a packet:
            # wake its task up, which closes the connection gracefully.
            self._closing = True
            self._cancel_reason = "closed"
            self._scope.cancel()
            await trio.lowlevel.checkpoint()
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._flush()
        self._closing = True
        stream = self._stream
        try:
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            else:
                with trio.move_on_after(_LINGER):
                    await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass

    def get_sessions(self) -> list[Session]:
        """All the open sessions from this client's IP address (including this one)."""
        return self.server.sessions.get(self.address)

    def __repr__(self) -> str:
        return f"HandlerClient({self.address}:{self.port}, session={self.session.session_id})"

    # -- writing (used by the server too) -----------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if self._closing:
            raise trio.ClosedResourceError("the connection was closed")
        io = self._io
        if self._corked:
            io.queue(data)
            if io.out_bytes < _CORK_LIMIT:
                return
        elif io.out:
            io.queue(data)
        else:
            await self._send_all(data)
            return
        await self._send_all(None)

    async def _flush(self) -> None:
        if self._io.out:
            await self._send_all(None)

    async def _send_all(self, data: bytes | None) -> None:
        """Write *data*, or with None the queued replies (in one ``writev``), one task at a
        time; the reaper times the write out like a wait for input."""
        while self._writing:
            # Another task of the same connection is writing (a handler that spawned tasks).
            if self._lot is None:
                self._lot = trio.lowlevel.ParkingLot()
            await self._lot.park()
        self._writing = True
        state = self._state
        self._state = _SENDING
        self._since = self.server._tick
        try:
            if data is None:
                await self._io.flush()
            else:
                await self._io.send_all(data)
        finally:
            self._state = state
            self._writing = False
            if self._lot:
                self._lot.unpark()


    async def _send_error_and_close(self, error: bytes) -> None:
        with trio.move_on_after(_ERROR_REPLY_TIMEOUT):
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
            ):
                await self._send_all(error)
        self._closing = True
        await self._close_gracefully()

    async def _close_gracefully(self) -> None:
        """Flush, shut the sending side down and discard input until the peer closes (for at
        most :data:`_LINGER` seconds), then close: closing with unread input would make the
        kernel send RST, which can destroy the reply the peer has not read yet."""
        stream = self._stream
        with trio.move_on_after(_LINGER):
            try:
                await self._flush()
                if isinstance(stream, trio.SocketStream):
                    await stream.send_eof()
                    while await self._io.receive():
                        pass
                else:
                    await stream.aclose()
            except (
                trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError
            ):
                pass
        await trio.aclose_forcefully(stream)


class Handler:
    """A handler function and its filters (internal, as in the original).

    Args:
        function: ``async def function(client, packet)``.
        filters: the filters that must all pass.
    """

    __slots__ = ("filters", "function", "is_async", "test")

    def __init__(self, function: HandlerFunction, filters: list[Filter] | None = None) -> None:
        self.function = function
        self.filters: tuple[Filter, ...] = tuple(filters or ())
        #: True when a filter must be awaited (:meth:`check_async`).
        self.is_async = any(f.is_async for f in self.filters)
        #: :meth:`check`, or the only filter's own check (one call less per packet).
        self.test: Callable[[HandlerClient, Packet], bool] = (
            self.filters[0].check if len(self.filters) == 1 else self.check
        )

    def check(self, client: HandlerClient, packet: Packet) -> bool:
        """True if every filter passes for this client and packet."""
        for f in self.filters:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
            if not f.check(client, packet):
                return False
        return True

    async def check_async(self, client: HandlerClient, packet: Packet) -> bool:
        """The same, awaiting asynchronous filters."""
        for f in self.filters:
            if not await f.check_async(client, packet):
                return False
        return True

    async def call(self, client: HandlerClient, packet: Packet) -> Any:
        """Await the handler function."""
        return await self.function(client, packet)

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return f"Handler({name}, {list(self.filters)!r})"


def _is_async_callable(obj: object) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - an async __call__ is what we look for
    )


class Server:
    """An AsyncAProto server (the original's ``asyncapy.server.Server``).

    Args:
        addr: the address to bind (default ``"127.0.0.1"``).
        port: the port to bind (default 8081; 0 picks a free port, see :meth:`serve`).
        buf: the most bytes read from a connection at once (default 65536; the original's
            1024 made pipelined packets cost several reads).
        logging_level: messages below this level are not logged (default INFO). Nothing is
            configured globally: see :meth:`start`.
        console_format: the log format :meth:`start` uses when logging is not configured.
        datefmt: the date format :meth:`start` uses.
        timeout: the idle timeout in seconds (default 60; None disables it): the longest a
            connection may wait for its next complete packet, or spend sending a reply, before
            it gets ``ERR_TIMED_OUT`` and is closed. Time spent in handlers does not count.
        header_size: bytes in the Content-Length header, 1 to 8 (default 4).
        byteorder: ``"big"`` (default) or ``"little"``.
        config: a configuration file (INI ``[AsyncAPY]`` section, or ``.toml``); its values
            override the arguments. See :func:`~trionet.aproto.read_config`.
        cfg_parser: a configparser object to read an INI *config* with.
        env_prefix: read options from environment variables with this prefix too (for
            example ``"ASYNCAPY_"``: ``ASYNCAPY_PORT=9000``); they override the arguments and
            the *config* file. None (default): the environment is not read. See
            :func:`~trionet.aproto.read_env`.
        session_limit: the most concurrent sessions (connections) per peer IP address; one
            more gets ``ERR_SESSION_LIMIT_REACHED`` and is closed. 0 (default) = no limit.
        keep_alive: serve many packets per connection (default). False closes the connection
            after the first packet has been handled, as the original did.
        session_timeout: the longest a connection may stay open, in seconds (default None = no
            limit); then it gets ``ERR_TIMED_OUT`` and is closed.
        max_packet_size: the largest Content-Length accepted (default 16 MiB); a larger one
            gets ``ERR_HEADER_INVALID`` and the connection is closed.
        max_pending_bytes: the most bytes of unfinished packets the server holds at once,
            across all connections (default 64 MiB; None = no limit). A connection whose
            bytes would go beyond it gets ``ERR_HEADER_INVALID`` and is closed, so slow or
            stalled senders of big packets cannot make the server's memory grow with their
            number.
        tls: speak TLS (the :mod:`trionet.tls` server vocabulary): a server-side
            :class:`ssl.SSLContext`, a :class:`~trionet.tls.TLSOptions` with the server's
            certificate (``ca_file`` + ``require_client_cert`` for mutual TLS), or a
            :class:`~trionet.tls.CertificateReloader` to renew the certificate without a
            restart (new connections get the reloaded one). None (default) = plain TCP.
        encoding: the encoding of a client before its first packet (default ``"json"``).
        shutdown_timeout: the grace period of :meth:`stop`, and the bound on :meth:`shutdown`
            when the server is cancelled (default 10 s).
        logger: the logger to use (default ``logging.getLogger("trionet.aproto.server")``).

    Raises:
        ConfigurationError: an argument or a config value is invalid (also a ValueError).

    Each server has its own handlers and sessions; constructing one changes nothing global.
    """

    def __init__(
        self,
        addr: str = "127.0.0.1",
        port: int = 8081,
        buf: int = 65536,
        logging_level: int = logging.INFO,
        console_format: str = "[%(levelname)s] %(asctime)s %(message)s",
        datefmt: str = "%d/%m/%Y %H:%M:%S %p",
        timeout: float | None = 60,
        header_size: int = 4,
        byteorder: str = "big",
        config: str | os.PathLike[str] | None = None,
        cfg_parser: configparser.RawConfigParser | None = None,
        session_limit: int = 0,
        *,
        keep_alive: bool = True,
        session_timeout: float | None = None,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
        tls: ServerTLSArgument = None,
        encoding: str = "json",
        shutdown_timeout: float = 10.0,
        logger: logging.Logger | None = None,
        env_prefix: str | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "addr": addr,
            "port": port,
            "buf": buf,
            "logging_level": logging_level,
            "console_format": console_format,
            "datefmt": datefmt,
            "timeout": timeout,
            "header_size": header_size,
            "byteorder": byteorder,
            "session_limit": session_limit,
            "keep_alive": keep_alive,
            "session_timeout": session_timeout,
            "max_packet_size": max_packet_size,
            "max_pending_bytes": max_pending_bytes,
            "encoding": encoding,
            "shutdown_timeout": shutdown_timeout,
        }
        options = {name: validate_option(name, value) for name, value in options.items()}
        server_tls_source(tls)  # a wrong tls= fails before the configuration is read
        self.config = config
        self.parser = cfg_parser
        if config is not None:
            options.update(read_config(config, cfg_parser))
        if env_prefix is not None:
            options.update(read_env(prefix=env_prefix))
        tls = _configured_tls(tls, options.pop("certfile", None), options.pop("keyfile", None))
        tls_source = server_tls_source(tls)
        self.addr: str = options["addr"]
        self.port: int = options["port"]
        self.buf: int = options["buf"]
        self.logging_level: int = options["logging_level"]
        self.console_format: str = options["console_format"]
        self.datefmt: str = options["datefmt"]
        self.timeout: float | None = options["timeout"]
        self.header_size: int = options["header_size"]
        self.byteorder: ByteOrder = options["byteorder"]
        self.session_limit: int = options["session_limit"]
        self.keep_alive: bool = options["keep_alive"]
        self.session_timeout: float | None = options["session_timeout"]
        self.max_packet_size: int = options["max_packet_size"]
        self.max_pending_bytes: int | None = options["max_pending_bytes"]
        self.encoding: Encoding = options["encoding"]
        self.shutdown_timeout: float = options["shutdown_timeout"]
        self.tls: ServerTLSArgument = tls
        self._tls_source = tls_source
        self.logger = logger if logger is not None else logging.getLogger("trionet.aproto.server")
        #: The open sessions, per peer IP address.
        self.sessions = SessionRegistry()
        self._handlers: dict[int, list[Handler]] = {}
        self._table: list[list[Handler]] = []
        self._encoder = PacketEncoder(
            header_size=self.header_size,
            byteorder=self.byteorder,
            max_packet_size=self.max_packet_size,
        )
        self._clients: set[HandlerClient] = set()
        self._stats = ServerStatistics()
        self._tick = 0
        self._pending = 0
        self._running = False
        self._stopping = False
        self._portal: TrioPortal | None = None
        self._accept_scope = trio.CancelScope()
        self._conn_scope: trio.CancelScope | None = None

    def statistics(self) -> ServerStatistics:
        """A snapshot of the server's counters."""
        return dataclasses.replace(
            self._stats,
            open_sessions=len(self._clients),
            pending_bytes=self._pending,
            busy_sessions=sum(1 for client in self._clients if client._state == _BUSY),
        )

    # -- handlers ------------------------------------------------------------------------------

    def register_handler(self, handler: HandlerFunction, *filters: Filter, group: int = 0) -> None:
        """Register an async handler, run for packets that pass all *filters*.

        Groups are dispatched in ascending order; in each group the first handler whose filters
        pass runs, then dispatch moves to the next group (unless the handler called
        :meth:`Packet.stop_propagation` or closed the connection).

        Raises:
            TypeError: *handler* is not an async function, a filter is not a :class:`Filter`,
                or *group* is not an int.
        """
        if not _is_async_callable(handler):
            raise TypeError(f"handler must be an async function, not {handler!r}")
        for f in filters:
            if not isinstance(f, Filter):
                raise TypeError(f"filters must be Filter instances, not {f!r}")
        if isinstance(group, bool) or not isinstance(group, int):
            raise TypeError(f"group must be an int, not {group!r}")
        self._handlers.setdefault(group, []).append(Handler(handler, list(filters)))
        self._table = [list(self._handlers[g]) for g in sorted(self._handlers)]

    def add_handler(
        self, *filters: Filter, group: int = 0
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Decorator form of :meth:`register_handler`; returns the function unchanged."""

        def decorator(function: HandlerFunction) -> HandlerFunction:
            self.register_handler(function, *filters, group=group)
            return function

        return decorator

    @property
    def handlers(self) -> dict[int, list[Handler]]:
        """The registered handlers by group (a copy, in dispatch order)."""
        return {g: list(self._handlers[g]) for g in sorted(self._handlers)}

    # -- hooks ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Called once when the server starts, before it binds. Override it."""

    async def shutdown(self) -> None:
        """Called once when the server stops, however it stops. Override it.

        It runs after :meth:`setup` has completed, when :meth:`serve` ends: by :meth:`stop`,
        SIGINT/SIGTERM under :meth:`start`, cancellation of the surrounding nursery, or an
        error. Under cancellation it runs shielded, for at most ``shutdown_timeout`` seconds.
        """

    async def run_sync_task(
        self,
        sync_fn: Callable[..., T],
        *args: object,
        abandon_on_cancel: bool = False,
        limiter: trio.CapacityLimiter | None = None,
        cancellable: bool | None = None,
    ) -> T:
        """Run a blocking function in a thread; see :func:`trionet.aproto.run_sync_task`."""
        return await run_sync_task(
            sync_fn,
            *args,
            abandon_on_cancel=abandon_on_cancel,
            limiter=limiter,
            cancellable=cancellable,
        )

    # -- running -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while :meth:`serve` runs (from :meth:`setup` to :meth:`shutdown`)."""
        return self._running

    def _log(self, level: int, message: str, *args: object) -> None:
        if level >= self.logging_level and self.logger.isEnabledFor(level):
            self.logger.log(level, message, *args)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or :meth:`stop` is called.

        Use it as ``port = await nursery.start(server.serve)``: it runs :meth:`setup`, binds
        ``addr:port``, then reports the bound port (also stored in ``port``; if *addr*
        resolves to several addresses, the first listener's port). :meth:`shutdown` runs when
        it ends, whichever way.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: the server is already running.
        """
        if self._running:
            raise RuntimeError("this server is already running")
        self._running = True
        self._stopping = False
        self._accept_scope = trio.CancelScope()
        self._portal = TrioPortal()
        try:
            await self.setup()
            try:
                await self._serve(task_status)
            finally:
                self._log(logging.DEBUG, "running the shutdown hook")
                with trio.move_on_after(self.shutdown_timeout, shield=True) as scope:
                    await self.shutdown()
                if scope.cancelled_caught:
                    self._log(logging.WARNING, "the shutdown hook took too long; abandoned it")
        finally:
            self._running = False
            self._portal = None

    async def _serve(self, task_status: trio.TaskStatus[int]) -> None:
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.addr)
        except OSError as exc:
            self._log(logging.ERROR, "could not bind %s:%s: %s", self.addr, self.port, exc)
            raise
        sockname = listeners[0].socket.getsockname()
        self.port = sockname[1]
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._reap)
                async with trio.open_nursery() as connections:
                    self._conn_scope = connections.cancel_scope
                    # The sockets already listen, so connections queue in the backlog until
                    # the accept loops run: reporting now is safe.
                    connections.start_soon(self._accept, listeners, connections)
                    self._log(
                        logging.INFO, "serving AsyncAProto on %s:%s", sockname[0], self.port
                    )
                    task_status.started(self.port)
                self._conn_scope = None
                outer.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            reraise_single(group)
        self._log(logging.INFO, "server stopped")

    async def _accept(
        self, listeners: list[trio.SocketListener], connections: trio.Nursery
    ) -> None:
        try:
            with self._accept_scope:
                await trio.serve_listeners(self._handle, listeners, handler_nursery=connections)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def stop(self) -> None:
        """Stop serving gracefully; :meth:`serve` (or :meth:`start`) then returns.

        The server stops accepting, closes idle connections, lets connections that are handling
        packets finish the packets they have received (for up to ``shutdown_timeout`` seconds,
        then they are cancelled), and runs :meth:`shutdown`. Safe to call from any thread, and
        more than once.

        Raises:
            RuntimeError: the server is not running.
        """
        portal = self._portal
        if portal is None:
            raise RuntimeError("the server is not running")
        portal.call(self._begin_stop)  # (dropped if trio stopped meanwhile)

    def _begin_stop(self) -> None:
        if not self._stopping:
            self._log(logging.INFO, "stopping: no new connections, closing idle ones")
        self._stopping = True
        self._accept_scope.cancel()
        if self._conn_scope is not None:
            self._conn_scope.deadline = min(
                self._conn_scope.deadline, trio.current_time() + self.shutdown_timeout
            )
        for client in list(self._clients):
            if client._state == _WAITING and client._scope is not None:
                client._cancel_reason = "shutdown"
                client._scope.cancel()

    def start(self) -> None:
        """Serve in a new ``trio.run`` until SIGINT/SIGTERM or :meth:`stop`, then return.

        The first SIGINT or SIGTERM stops gracefully (as :meth:`stop`), a second one cancels
        everything. Signals are handled only when called from the main thread. If neither the
        server's logger nor the root logger has a handler, a stderr handler with
        ``console_format``/``datefmt`` is attached to the server's logger for the duration of
        the call (and removed afterwards); nothing is configured globally.
        """
        handler: logging.Handler | None = None
        old_level = self.logger.level
        if not self.logger.hasHandlers():
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(self.console_format, self.datefmt))
            self.logger.addHandler(handler)
            if self.logger.getEffectiveLevel() > self.logging_level:
                self.logger.setLevel(self.logging_level)
        try:
            trio.run(self._main)
        except BaseExceptionGroup as group:
            reraise_single(group)
        finally:
            if handler is not None:
                self.logger.removeHandler(handler)
                self.logger.setLevel(old_level)

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            if in_main_thread():
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
            await self.serve()
            nursery.cancel_scope.cancel()

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping:
                    self._log(logging.WARNING, "%s again: cancelling everything", name)
                    scope.cancel()
                    return
                self._log(logging.INFO, "%s received: shutting down", name)
                self.stop()

    # -- timeouts ------------------------------------------------------------------------------

    async def _reap(self) -> None:
        timeout = self.timeout
        if timeout is None:
            await trio.sleep_forever()
        # Connections record the tick at which they started waiting or sending (an int read
        # is cheaper than reading the clock on every packet); the reaper counts ticks.
        interval = min(max(timeout / 10, 0.005), 1.0)
        ticks = math.ceil(timeout / interval - 1e-9)
        while True:
            await trio.sleep(interval)
            self._tick += 1
            limit = self._tick - ticks
            for client in self._clients:
                if (
                    client._state != _BUSY
                    and client._since < limit
                    and client._cancel_reason is None
                    and client._scope is not None
                ):
                    client._cancel_reason = "timeout"
                    client._scope.cancel()

    # -- connections ---------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            ip = normalize_ip(peer[0])
        except (OSError, ValueError) as exc:
            self._log(logging.DEBUG, "connection gone before it could be served: %s", exc)
            return
        transport: trio.abc.Stream = stream
        if self._tls_source is not None:
            transport = trio.SSLStream(stream, self._tls_source(), server_side=True)
        client = HandlerClient(self, transport, ip, peer[1])
        session = client.session
        sid = session.session_id
        set_correlation_id(str(sid))  # this task serves one connection: its logs carry the session
        self._stats.connections += 1
        if self.session_limit and self.sessions.count(client.address) >= self.session_limit:
            self._log(
                logging.WARNING,
                "(%s) %s already has %d sessions: refusing this one",
                sid,
                client.address,
                self.session_limit,
            )
            await client._send_error_and_close(self._encoder.error(ERR_SESSION_LIMIT_REACHED))
            return
        self._log(logging.INFO, "(%s) new session from %s:%s", sid, client.address, client.port)
        self.sessions.add(client.address, session)
        linger = False
        timed_out = False
        try:
            with trio.CancelScope() as scope:
                if self.session_timeout is not None:
                    scope.deadline = trio.current_time() + self.session_timeout
                client._scope = scope
                client._since = self._tick
                self._clients.add(client)
                linger = await self._serve_client(client)
            if scope.cancelled_caught:
                reason = client._cancel_reason or "timeout"
                self._log(logging.INFO, "(%s) session ended: %s", sid, reason)
                timed_out = reason == "timeout"
                linger = reason != "shutdown"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._log(logging.INFO, "(%s) connection lost: %s", sid, exc or type(exc).__name__)
        except Exception:
            self.logger.exception("(%s) unexpected error; connection closed", sid)
        finally:
            self._pending -= client._held
            client._held = 0
            self._clients.discard(client)
            self.sessions.remove(client.address, session)
        if timed_out and client._state == _WAITING:
            self._stats.timeouts += 1
            await client._send_error_and_close(self._encoder.error(ERR_TIMED_OUT))
        elif linger and not timed_out and not self._stopping:
            await client._close_gracefully()
        else:
            await trio.aclose_forcefully(transport)
        self._log(logging.DEBUG, "(%s) closed", sid)

    async def _serve_client(self, client: HandlerClient) -> bool:
        """Serve packets until the connection should close; return True to linger first."""
        stream = client._stream
        if isinstance(stream, trio.SSLStream):
            await stream.do_handshake()
        decoder = PacketDecoder(
            header_size=self.header_size,
            byteorder=self.byteorder,
            max_packet_size=self.max_packet_size,
        )
        receive = client._io.receive
        feed = decoder._feed
        encoder = self._encoder
        keep_alive = self.keep_alive
        budget = self.max_pending_bytes
        debug = self.logging_level <= logging.DEBUG and self.logger.isEnabledFor(logging.DEBUG)
        sid = client.session.session_id
        stats = self._stats
        new_packet = Packet.__new__
        pending: bytes | bytearray | None = None
        if self._tls_source is None:
            # The state is _WAITING: the idle timeout bounds this read too.
            first = await receive()
            while (looks_tls := _tls_client_hello_prefix(first)) is None:
                more = await receive()
                if not more:
                    break
                first += more
            pending = first
            if looks_tls:
                stats.rejected += 1
                self._log(
                    logging.WARNING,
                    "(%s) %s:%s started a TLS handshake, but this port speaks plain TCP: "
                    "closing the connection (connect with tls=False, or give the server a "
                    "certificate)",
                    sid, client.address, client.port,
                )
                await client._write(encoder.error(ERR_HEADER_INVALID))
                return True
        while not self._stopping:
            client._state = _WAITING
            client._since = self._tick
            while True:
                if pending is None:
                    data = await receive()
                else:
                    data, pending = pending, None
                events = feed(data)
                if events or not data:
                    break
                if budget is not None:
                    # A packet is unfinished: count its bytes against the server's budget.
                    held = decoder.buffered
                    self._pending += held - client._held
                    client._held = held
                    if self._pending > budget:
                        stats.rejected += 1
                        self._log(
                            logging.WARNING,
                            "(%s) %s:%s: unfinished packets would hold more than "
                            "max_pending_bytes=%d bytes across all connections: closing this one",
                            sid, client.address, client.port, budget,
                        )
                        await client._write(encoder.error(ERR_HEADER_INVALID))
                        return True
            if client._held:
                self._pending -= client._held
                client._held = 0
            client._state = _BUSY
            traced = _tracing.enabled()  # (looked at once per read: it costs a call)
            last = len(events) - 1
            for index, event in enumerate(events):
                client._corked = index != last
                if isinstance(event, tuple):  # a valid packet: (fields, encoding)
                    fields, packet_encoding = event
                    if debug:
                        self._log(logging.DEBUG, "(%s) packet %r", sid, fields)
                    client.encoding = packet_encoding
                    stats.packets += 1
                    packet = new_packet(Packet)  # Packet._received, inlined
                    packet.fields = fields
                    packet.encoding = packet_encoding
                    packet.sender = client
                    await _dispatch(self, client, packet, traced)
                    if client._failed:
                        return True
                else:
                    stats.rejected += 1
                    self._log(
                        logging.WARNING, "(%s) %s: %s", sid, event.error_code, event.reason
                    )
                    await client._write(encoder.error(event.error_code, event.encoding))
                    if event.fatal:
                        return True
                if client._closing or not keep_alive:
                    return True
            client._corked = False
            await client._flush()
            if not data:
                self._log(logging.INFO, "(%s) the client closed the connection", sid)
                return False
        return False

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<aproto.Server {self.addr}:{self.port} {state}, {len(self._clients)} client(s)>"


async def _dispatch(
    server: Server, client: HandlerClient, packet: Packet, traced: bool
) -> None:
    """Run a packet's handlers: in each group, the first one whose filters pass (in a SERVER
    span if *traced*)."""
    began = trio.current_time() if _metrics.sinks else None  # (_metrics.recording())
    span = _request_span(client) if traced else None
    try:
        for group in server._table:
            for handler in group:
                if (await handler.check_async(client, packet) if handler.is_async
                        else handler.test(client, packet)):
                    if span is not None:
                        _tracing.name_method(span, handler.function)
                    await handler.function(client, packet)
                    break
            if client._closing:
                return
    except StopPropagation:
        pass
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # The peer vanished (or close() was called) while a handler was sending.
        client._failed = True
        if not client._closing:
            server._log(
                logging.INFO, "(%s) connection lost while sending: %s",
                client.session.session_id, exc or type(exc).__name__,
            )
    except Exception as exc:
        client._failed = True
        server._stats.handler_errors += 1
        _tracing.end_span(span, exc)
        server.logger.exception(
            "(%s) a handler failed; closing the connection", client.session.session_id
        )
    finally:
        if began is not None:
            _metrics.request("aproto", trio.current_time() - began, not client._failed)
        if span is not None:
            _tracing.end_span(span, None)


def _request_span(client: HandlerClient) -> _tracing.Span | None:
    """The SERVER span of one packet, current while its handler runs, named after that handler
    (trionet.tracing); no trace context arrives: AsyncAProto's packets have no header field for
    one."""
    return _tracing.start_span("aproto request", "server", {
        "rpc.system": "aproto", "client.address": client.address, "client.port": client.port,
        "network.transport": "tcp"}, current=True)
