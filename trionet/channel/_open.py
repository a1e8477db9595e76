"""Opening channels: :func:`open_connection`, :func:`open_channel` and :func:`start_server`."""

from __future__ import annotations

import logging
import math
import os
import socket as _stdlib_socket
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from .._tls import client_handshake, client_tls, server_tls_source
from .._util import open_hidden_nursery
from ..codecs import Codec, SerializerFactory, SerializingCodec, get_codec
from ..framing import DEFAULT_MAX_FRAME_SIZE
from ..supervision import Backoff, RetryPolicy
from ..tls import ServerTLSArgument, TLSArgument
from ._channel import Channel

__all__ = ["Address", "CodecSpec", "open_channel", "open_connection", "start_server"]

logger = logging.getLogger("trionet.channel")

#: A TCP ``(host, port)`` tuple or a Unix socket path.
Address = tuple[str, int] | str
#: A codec name, a codec object (shared by all connections) or a factory called per connection.
CodecSpec = str | Codec | Callable[[], Codec]

_DEFAULT_BACKLOG = 128
#: Seconds a server's client has to complete a frame it started (and its TLS handshake).
DEFAULT_FRAME_TIMEOUT = 30.0
#: Seconds a server keeps a connection on which nothing is outstanding and nothing arrives.
DEFAULT_IDLE_TIMEOUT = 300.0


def _codec_factory(
    codec: CodecSpec, extra_serializers: Iterable[SerializerFactory] = ()
) -> Callable[[], Codec]:
    """One codec per call for factories; names and objects are resolved once and shared.

    *extra_serializers* (aiomas's argument: factories returning ``add_serializer``'s arguments)
    are added to each new codec, or once to a shared one.
    """
    extras = tuple(extra_serializers)

    def extend(made: Codec) -> Codec:
        if extras:
            if not isinstance(made, SerializingCodec):
                raise TypeError(f"extra_serializers need a codec with add_serializer(), not "
                                f"{made!r}")
            for factory in extras:
                made.add_serializer(*factory())
        return made

    if isinstance(codec, (str, Codec)) and not isinstance(codec, type):
        shared = extend(get_codec(codec))
        return lambda: shared
    if isinstance(codec, type) or callable(codec):
        make = codec
        return (lambda: extend(make())) if extras else make
    raise TypeError(f"codec must be a name, a codec or a codec factory, not {codec!r}")


@asynccontextmanager
async def open_channel(
    stream: trio.abc.Stream,
    *,
    codec: CodecSpec = "json",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    extra_serializers: Iterable[SerializerFactory] = (),
) -> AsyncIterator[Channel]:
    """Run a :class:`Channel` over an existing stream; close both on exit.

    Use it for streams you opened yourself, for example one end of
    :func:`trio.testing.memory_stream_pair`::

        left, right = trio.testing.memory_stream_pair()
        async with open_channel(left) as a, open_channel(right) as b:
            ...

    Args:
        stream: the byte stream; it is closed when the block exits.
        codec: a codec name (``"json"`` by default, ``"msgpack"``), object or factory.
        max_frame_size: the largest message accepted or sent, in bytes.
        extra_serializers: serializer factories (aiomas's ``extra_serializers``, for example
            :data:`~trionet.codecs.STANDARD_SERIALIZERS`) added to the codec.
    """
    channel: Channel | None = None
    try:
        async with open_hidden_nursery() as nursery:
            channel = Channel(
                stream, nursery, codec=_codec_factory(codec, extra_serializers)(),
                max_frame_size=max_frame_size,
            )
            try:
                yield channel
            finally:
                await channel.aclose()
    finally:
        if channel is None:
            await trio.aclose_forcefully(stream)


async def _open_stream(addr: Address, kwds: dict[str, Any]) -> trio.abc.Stream:
    if isinstance(addr, tuple):
        return await trio.open_tcp_stream(addr[0], addr[1], **kwds)
    if isinstance(addr, (str, os.PathLike)):
        if kwds:
            raise TypeError(f"unexpected arguments for a Unix socket: {', '.join(kwds)}")
        return await trio.open_unix_socket(addr)
    raise TypeError(f"addr must be a (host, port) tuple or a socket path, not {addr!r}")


#: aiomas's ``open_connection(timeout=)`` retries this often (a short, capped backoff).
_RETRY_BACKOFF = Backoff(initial=0.05, factor=1.5, maximum=1.0, jitter=0.1)


def _retry_policy(timeout: float | None, retry: RetryPolicy | None) -> RetryPolicy | None:
    if retry is not None:
        if timeout != 0:
            raise TypeError("give timeout= or retry=, not both")
        return retry
    if timeout == 0:
        return None
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return RetryPolicy(_RETRY_BACKOFF, deadline=timeout)


async def _connect(
    addr: Address,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    kwds: dict[str, Any],
    retry: RetryPolicy | None = None,
) -> trio.abc.Stream:
    stream: trio.abc.Stream
    if retry is None:
        stream = await _open_stream(addr, kwds)
    else:
        # Only refusals are retried (the server is not up yet): ECONNREFUSED, a missing
        # socket file, or trio's "all attempts failed" OSError for a host with several
        # addresses; a TLS failure or a bad argument is not.
        stream = await retry.call(partial(_open_stream, addr, kwds),
                                  retry_on=(OSError,))
    if isinstance(addr, tuple):
        hostname = server_hostname if server_hostname is not None else addr[0]
    else:
        hostname = server_hostname if server_hostname is not None else "localhost"
    if ssl_context is None:
        return stream
    ssl_stream = trio.SSLStream(stream, ssl_context, server_hostname=hostname)
    await client_handshake(ssl_stream, hostname)
    return ssl_stream


@asynccontextmanager
async def open_connection(
    addr: Address,
    *,
    codec: CodecSpec = "json",
    tls: TLSArgument = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    extra_serializers: Iterable[SerializerFactory] = (),
    timeout: float | None = 0,  # noqa: ASYNC109 (aiomas's retry-connect argument)
    retry: RetryPolicy | None = None,
    **kwds: Any,
) -> AsyncIterator[Channel]:
    """Connect to a channel server; yield the :class:`Channel`, close it on exit.

    ::

        async with open_connection(("127.0.0.1", 5555)) as channel:
            reply = await channel.send(["ping", 42])

    Args:
        addr: ``(host, port)`` for TCP, or a path (``str``) for a Unix socket.
        codec: a codec name (``"json"`` by default, as aiomas 2.x, or ``"msgpack"``), a codec
            object, or a factory returning one.
        tls: connect with TLS (the :mod:`trionet.tls` vocabulary): ``True`` verifies the
            server against the system's CAs, a :class:`~trionet.tls.TLSOptions` names a
            private CA and a client certificate (mutual TLS), or an :class:`ssl.SSLContext`;
            the certificate is checked against *server_hostname*. None (default): plain.
        ssl_context: aiomas's name for ``tls=`` with a context (give one of the two).
        server_hostname: the name to check the server's certificate against; defaults to the
            TCP host (``"localhost"`` for Unix sockets).
        max_frame_size: the largest message accepted or sent, in bytes.
        extra_serializers: serializer factories added to the codec (aiomas's argument; see
            :data:`~trionet.codecs.STANDARD_SERIALIZERS`).
        timeout: aiomas's retry-connect: ``0`` (default) tries once; a number of seconds keeps
            trying while the connection is refused (the server is not up yet) for that long,
            with a short backoff; ``None`` keeps trying until cancelled.
        retry: a :class:`~trionet.supervision.RetryPolicy` instead of *timeout* (your own
            backoff, attempt limit, deadline, or a circuit breaker shared with other clients).
        **kwds: passed on to :func:`trio.open_tcp_stream` (``happy_eyeballs_delay``,
            ``local_address``).

    Raises:
        OSError: the connection could not be made (for example ``ConnectionRefusedError``, or
            ``FileNotFoundError`` for a missing socket path).
        TLSVerificationError: the server's certificate could not be verified (the message
            says for which host and why).
        TLSNotSpoken: the server does not speak TLS on that port.
        TLSError: the TLS handshake failed otherwise. All three are also
            :exc:`trio.BrokenResourceError`.
        CircuitOpenError: the *retry* policy's circuit breaker is open.
    """
    policy = _retry_policy(timeout, retry)
    context = client_tls(tls, ssl_context)
    stream = await _connect(addr, context, server_hostname, kwds, policy)
    async with open_channel(stream, codec=codec, max_frame_size=max_frame_size,
                            extra_serializers=extra_serializers) as channel:
        yield channel


async def _open_listeners(addr: Address, backlog: int | None) -> list[trio.SocketListener]:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return await trio.open_tcp_listeners(port, host=host or None, backlog=backlog)
    if not isinstance(addr, (str, os.PathLike)):
        raise TypeError(f"addr must be a (host, port) tuple or a socket path, not {addr!r}")
    path = os.fspath(addr)
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket left by an earlier server, as asyncio does
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(_DEFAULT_BACKLOG if backlog is None else backlog)
    except BaseException:
        sock.close()
        raise
    return [trio.SocketListener(sock)]


def _bound_address(listener: trio.SocketListener) -> Any:
    name = listener.socket.getsockname()
    if isinstance(name, tuple):
        return (name[0], name[1])
    return os.fsdecode(name)


async def start_server(
    addr: Address,
    client_connected_cb: Callable[[Channel], Awaitable[object]],
    *,
    codec: CodecSpec = "json",
    tls: ServerTLSArgument = None,
    ssl_context: ssl.SSLContext | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    backlog: int | None = None,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    extra_serializers: Iterable[SerializerFactory] = (),
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve channels on *addr* until cancelled; start it with ``nursery.start``.

    ::

        async def handle(channel):
            async for request in channel:
                await request.reply(request.content)

        addresses = await nursery.start(start_server, ("127.0.0.1", 0), handle)

    For each connection, ``await client_connected_cb(channel)`` runs in a task of a nursery
    the server owns; the connection is closed when it returns. An exception escaping it is
    logged (on the ``trionet.channel`` logger) and closes that connection only. Cancelling the
    server cancels every connection's task and closes every connection. A client sending a
    malformed or oversize message is disconnected; the others are not affected.

    Args:
        addr: ``(host, port)`` for TCP (port 0 picks a free port; host ``""`` means every
            interface), or a path (``str``) for a Unix socket (a stale socket file there is
            replaced, and removed again when the server stops).
        client_connected_cb: ``async def cb(channel)``, run once per connection.
        codec: a codec name (``"json"`` by default, as aiomas 2.x, or ``"msgpack"``) or a
            codec object, shared by all connections; or a factory called per connection.
        tls: serve TLS (the :mod:`trionet.tls` server vocabulary): a server-side
            :class:`ssl.SSLContext`, a :class:`~trionet.tls.TLSOptions` with the server's
            certificate (and ``ca_file`` + ``require_client_cert`` for mutual TLS), or a
            :class:`~trionet.tls.CertificateReloader` to renew the certificate while serving
            (new connections get the reloaded one). The handshake is done before
            *client_connected_cb* runs, and a failed handshake only closes that connection.
        ssl_context: aiomas's name for ``tls=`` with a context (give one of the two).
        max_frame_size: the largest message accepted or sent, in bytes.
        backlog: the listen backlog (trio's default if ``None``).
        frame_timeout: seconds a client has to complete a frame it has started sending, and
            to complete the TLS handshake (default 30; ``None`` disables it). A client that
            holds a partial frame longer is disconnected and its buffered bytes are freed.
        idle_timeout: seconds a connection may stay silent while nothing is outstanding
            either way (no request unanswered, no reply awaited; default 300; ``None`` keeps
            idle connections open forever, as aiomas does).
        extra_serializers: serializer factories added to the codec (aiomas's argument).
        task_status: set by ``nursery.start``; receives the list of bound addresses,
            ``(host, port)`` tuples or the socket path.
    """
    make_codec = _codec_factory(codec, extra_serializers)
    tls_source = server_tls_source(tls, ssl_context)
    listeners = await _open_listeners(addr, backlog)
    unix_path = None if isinstance(addr, tuple) else os.fspath(addr)
    unix_inode = os.stat(unix_path).st_ino if unix_path is not None else None
    for name, value in (("frame_timeout", frame_timeout), ("idle_timeout", idle_timeout)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive or None, not {value!r}")
    live: dict[Channel, trio.CancelScope] = {}
    try:
        async with trio.open_nursery() as nursery:
            if frame_timeout is not None or idle_timeout is not None:
                nursery.start_soon(_reap_stalled, live, frame_timeout, idle_timeout)
            handler = partial(
                _serve_connection,
                nursery=nursery,
                callback=client_connected_cb,
                make_codec=make_codec,
                tls_source=tls_source,
                max_frame_size=max_frame_size,
                handshake_timeout=frame_timeout,
                live=live,
            )
            await nursery.start(partial(trio.serve_listeners, handler, listeners,
                                        handler_nursery=nursery))
            task_status.started([_bound_address(listener) for listener in listeners])
    finally:
        if unix_path is not None:
            _remove_socket_file(unix_path, unix_inode)


def _remove_socket_file(path: str, inode: int | None) -> None:
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


async def _serve_connection(
    stream: trio.abc.Stream,
    *,
    nursery: trio.Nursery,
    callback: Callable[[Channel], Awaitable[object]],
    make_codec: Callable[[], Codec],
    tls_source: Callable[[], ssl.SSLContext] | None,
    max_frame_size: int,
    handshake_timeout: float | None,
    live: dict[Channel, trio.CancelScope],
) -> None:
    peer = "a client"
    try:
        if tls_source is not None:
            stream = trio.SSLStream(stream, tls_source(), server_side=True)
            with trio.move_on_after(
                math.inf if handshake_timeout is None else handshake_timeout
            ) as handshake:
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    logger.info("TLS handshake failed: %s", exc.__cause__ or exc)
                    return
            if handshake.cancelled_caught:
                logger.info("TLS handshake not completed within %g s", handshake_timeout)
                return
        channel = Channel(stream, nursery, codec=make_codec(), max_frame_size=max_frame_size)
        peer = channel.origin
        with trio.CancelScope() as scope:
            live[channel] = scope
            try:
                await callback(channel)
            finally:
                del live[channel]
                await channel.aclose()
    except Exception as exc:
        if _is_disconnect(exc):
            logger.debug("connection from %s ended: %s", peer, exc)
        else:
            logger.exception("unhandled error in the handler for %s", peer)
    finally:
        await trio.aclose_forcefully(stream)


async def _reap_stalled(
    live: dict[Channel, trio.CancelScope],
    frame_timeout: float | None,
    idle_timeout: float | None,
) -> None:
    """Every tick, cancel the connections whose client stalls a frame or idles too long.

    One task for the whole server. A tick is a tenth of the shorter timeout (at most a second),
    so a connection goes between its timeout and its timeout plus a tick.
    """
    shortest = min(t for t in (frame_timeout, idle_timeout) if t is not None)
    tick = min(max(shortest / 10, 0.005), 1.0)
    while True:
        await trio.sleep(tick)
        now = trio.current_time()
        for channel, scope in list(live.items()):
            reason = channel.stalled(now, frame_timeout, idle_timeout)
            if reason is not None and not scope.cancel_called:
                logger.info("closing the connection to %s: %s", channel.origin, reason)
                scope.cancel()


def _is_disconnect(exc: BaseException) -> bool:
    """True for a lost connection, or an exception group made only of lost connections."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_disconnect(inner) for inner in exc.exceptions)
    return isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError))
