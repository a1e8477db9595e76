"""The trio AsyncAProto client, over :class:`~trionet.framing.FramedStream`."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final

import trio

from .. import tracing as _tracing
from .._tls import client_handshake
from ..errors import AProtoError, ConfigurationError, TLSNotSpoken
from ..framing import FramedStream
from ..tls import TLSOptions, client_context
from ._config import validate_option
from ._errors import ConnectionClosed
from ._packet import (
    DEFAULT_MAX_PACKET_SIZE,
    ERR_REQUEST_MALFORMED,
    ByteOrder,
    Encoding,
    Incoming,
    Packet,
    PacketEncoder,
    check_encoding,
    parse_body,
)

__all__ = ["AsyncClient", "TLSArg", "make_client_context", "plaintext_server_error"]

#: ``tls=`` of the clients: True (verified, system CAs), False (plain TCP), a context, or a
#: :class:`~trionet.tls.TLSOptions` (the :mod:`trionet.tls` vocabulary).
TLSArg = bool | ssl.SSLContext | TLSOptions

_CLOSE_TIMEOUT: Final = 5.0


def make_client_context(tls: TLSArg) -> ssl.SSLContext | None:
    """The client-side SSL context for a ``tls=`` argument (None for plain TCP).

    ``True`` gives :func:`ssl.create_default_context`: certificate and hostname verification
    against the system's CAs; a :class:`~trionet.tls.TLSOptions` a verified context with its
    CA and client certificate (see :func:`trionet.tls.client_context`).
    """
    if tls is None or not isinstance(tls, (bool, ssl.SSLContext, TLSOptions)):
        raise ConfigurationError(
            f"tls must be True, False, an ssl.SSLContext or a trionet.tls.TLSOptions, not {tls!r}"
        )
    return client_context(tls)


def plaintext_server_error(error: TLSNotSpoken, port: int) -> TLSNotSpoken:
    """*error* with the AsyncAProto way out spelled: what to pass to the client or the server.

    ``Server()`` speaks plain TCP by default while both clients default to ``tls=True``.
    """
    return TLSNotSpoken(
        f"{error} [port {port}: pass tls=False to the client, or start the Server with "
        "tls=<server SSLContext> or certfile/keyfile]",
        host=error.host,
    )


class _RequestCodec:
    """Turns what a client user passes into packet bodies, and packet bodies into dicts."""

    __slots__ = ("encoder", "encoding", "header_size")

    def __init__(
        self, header_size: int, byteorder: ByteOrder, encoding: Encoding, max_packet_size: int
    ) -> None:
        self.header_size = header_size
        self.encoding: Encoding = encoding
        self.encoder = PacketEncoder(
            header_size=header_size, byteorder=byteorder, max_packet_size=max_packet_size
        )

    def body(self, payload: Mapping[Any, Any] | Packet | str | bytes) -> bytes:
        """Protocol-Version + Content-Encoding + encoded payload."""
        encoding = self.encoding
        if isinstance(payload, Packet):
            fields: Any = payload.fields
            encoding = payload.encoding or encoding
        elif isinstance(payload, Mapping):
            fields = payload
        elif isinstance(payload, (str, bytes, bytearray)):
            try:
                fields = json.loads(payload)
            except ValueError as exc:
                raise AProtoError(
                    f"payload is not valid JSON: {exc}",
                    error_code=ERR_REQUEST_MALFORMED,
                    fault="local",
                ) from exc
            if not isinstance(fields, dict):
                raise AProtoError(
                    "payload must be a JSON object",
                    error_code=ERR_REQUEST_MALFORMED,
                    fault="local",
                )
        else:
            raise TypeError(
                f"payload must be a dict, a Packet or a JSON object string, "
                f"not {type(payload).__name__}"
            )
        return self.encoder.encode_body(fields, encoding)

    def packet(self, body: bytes) -> bytes:
        """The full packet for *body* (its Content-Length header prepended)."""
        return self.encoder.header(len(body)) + body

    @staticmethod
    def decode(body: bytes) -> dict[Any, Any]:
        event = parse_body(body)
        if isinstance(event, Incoming):
            return event.fields
        raise event.to_error()


class _ClientBase:
    """What both clients share: the constructor (options validated once) and the address check.

    Subclasses set up their connection state in :meth:`_reset_connection`.
    """

    def __init__(
        self,
        byteorder: str = "big",
        header_size: int = 4,
        tls: TLSArg = True,
        encoding: str = "json",
        timeout: float | None = 60,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        self.byteorder: ByteOrder = validate_option("byteorder", byteorder)
        self.header_size: int = validate_option("header_size", header_size)
        self.encoding: Encoding = check_encoding(encoding)
        self.timeout: float | None = validate_option("timeout", timeout)
        self.tls = tls
        self.max_packet_size: int = validate_option("max_packet_size", max_packet_size)
        self._context = make_client_context(tls)
        self._codec = _RequestCodec(
            self.header_size, self.byteorder, self.encoding, self.max_packet_size
        )
        self._reset_connection()

    def _reset_connection(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _check_address(hostname: object, port: object) -> None:
        if not isinstance(hostname, str) or isinstance(port, bool) or not isinstance(port, int):
            raise ConfigurationError("hostname must be a str and port an int")


class AsyncClient(_ClientBase):
    """An AsyncAProto client for trio.

    One client holds one connection, which stays open for any number of requests. Replies are
    parsed exactly however the bytes arrive, and pipelining works: :meth:`send` (or
    :meth:`send_many`) several packets, then :meth:`receive` as many replies, which the server
    sends in order.

    Args:
        byteorder: the Content-Length byte order, ``"big"`` (default) or ``"little"``.
        header_size: bytes in the Content-Length header, 1 to 8 (default 4).
        tls: True (default): TLS with certificate and hostname verification against the system
            CAs; a :class:`~trionet.tls.TLSOptions` (a private CA, a client certificate for
            mutual TLS) or an :class:`ssl.SSLContext` to use your own; False: plain TCP.
        encoding: the encoding of the packets this client sends, ``"json"`` (default) or
            ``"ziproto"``. Replies are decoded by their own Content-Encoding byte.
        timeout: the longest, in seconds, that connecting, one send or one receive may take
            before :class:`trio.TooSlowError` (default 60; None = no limit).
        max_packet_size: the largest packet accepted or sent (default 16 MiB).

    Example::

        async with AsyncClient(tls=False) as client:
            await client.connect("127.0.0.1", port)
            reply = await client.request({"cmd": "ping"})

    Raises:
        ConfigurationError: an invalid argument.
    """

    def _reset_connection(self) -> None:
        self._framed: FramedStream | None = None
        self._peer: tuple[str, int] = ("", 0)
        self._lock = trio.StrictFIFOLock()
        self._orphans = 0

    def _deadline(self) -> contextlib.AbstractContextManager[Any]:
        if self.timeout is None:
            return contextlib.nullcontext()
        return trio.fail_after(self.timeout)

    @property
    def connected(self) -> bool:
        """True between :meth:`connect` and :meth:`disconnect`."""
        return self._framed is not None

    def _require(self) -> FramedStream:
        if self._framed is None:
            raise trio.ClosedResourceError("the client is not connected; call connect() first")
        return self._framed

    async def connect(
        self, hostname: str, port: int, *, server_hostname: str | None = None
    ) -> None:
        """Open the connection (and do the TLS handshake, if any).

        Args:
            hostname: the server's address or name.
            port: the server's port.
            server_hostname: the name to verify the certificate against (default *hostname*).

        Raises:
            OSError: the connection failed.
            TLSVerificationError: the server's certificate could not be verified (not issued by
                a trusted CA, or not for *server_hostname*); the message names the host and
                the reason.
            TLSNotSpoken: the server answered the TLS handshake in plain text: it does not
                speak TLS (connect with ``tls=False``, or give the server a certificate).
            TLSError: the TLS handshake failed otherwise. All three are in
                :mod:`trionet.errors` and are also :class:`trio.BrokenResourceError`.
            trio.TooSlowError: the timeout expired.
            RuntimeError: already connected.
        """
        if self._framed is not None:
            raise RuntimeError("already connected; disconnect() first")
        self._check_address(hostname, port)
        with self._deadline():
            stream: trio.abc.Stream = await trio.open_tcp_stream(hostname, port)
            if self._context is not None:
                name = server_hostname or hostname
                ssl_stream = trio.SSLStream(stream, self._context, server_hostname=name)
                try:
                    await client_handshake(ssl_stream, name)
                except TLSNotSpoken as exc:
                    raise plaintext_server_error(exc, port) from exc.__cause__
                stream = ssl_stream
        self._framed = FramedStream(
            stream,
            header_size=self.header_size,
            byteorder=self.byteorder,
            extra_header_size=0,
            max_frame_size=self.max_packet_size,
        )
        self._orphans = 0
        self._peer = (hostname, port)

    async def disconnect(self) -> None:
        """Close the connection (no error if it is not open)."""
        framed, self._framed = self._framed, None
        if framed is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
            await framed.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(framed.stream)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def send(self, payload: Mapping[Any, Any] | Packet | str | bytes) -> None:
        """Send one packet.

        Args:
            payload: a dict (or any mapping), a :class:`Packet` (sent in its own encoding if it
                has one), or a JSON object as ``str``/``bytes``.

        Raises:
            AProtoError: *payload* is a string that is not a JSON object (``fault="local"``).
            CodecError: the payload cannot be encoded.
            trio.ClosedResourceError: not connected.
            trio.BrokenResourceError: the connection failed.
            trio.TooSlowError: the timeout expired.
        """
        framed = self._require()
        body = self._codec.body(payload)
        with self._deadline():
            await framed.send_frame(body)

    async def send_many(self, payloads: Iterable[Mapping[Any, Any] | Packet | str | bytes]) -> None:
        """Send several packets in one write (same errors as :meth:`send`)."""
        framed = self._require()
        bodies = [self._codec.body(p) for p in payloads]
        with self._deadline():
            await framed.send_frames(bodies)

    async def _receive_body(self) -> bytes | None:
        framed = self._require()
        try:
            with self._deadline():
                return await framed.receive_frame()
        except trio.EndOfChannel:
            return None

    async def receive_raw(self) -> bytes:
        """Return the next complete packet, headers included; ``b""`` if the server closed.

        Raises:
            IncompleteFrame: the server closed the connection in the middle of a packet.
            FrameTooLarge: the server announced a packet above ``max_packet_size``.
            trio.TooSlowError: the timeout expired.
        """
        body = await self._receive_body()
        return b"" if body is None else self._codec.packet(body)

    async def receive(self) -> dict[Any, Any]:
        """Return the payload of the next packet, decoded by its own Content-Encoding.

        Error replies (``{"status": "failure", "error": ...}``) are returned like any payload.

        Raises:
            ConnectionClosed: the server closed the connection cleanly.
            AProtoError: the packet has a bad version or encoding byte, or an undecodable or
                non-map payload (``fault="remote"``).
            IncompleteFrame, FrameTooLarge, trio.TooSlowError: as :meth:`receive_raw`.
        """
        body = await self._receive_body()
        if body is None:
            raise ConnectionClosed()
        return self._codec.decode(body)

    async def request(self, payload: Mapping[Any, Any] | Packet | str | bytes) -> dict[Any, Any]:
        """Send one packet and return the reply's payload.

        Safe to call from several tasks at once: requests are serialised. If a request is
        cancelled (or times out) after it was sent, its reply is skipped by the next request.
        Do not mix :meth:`request` with :meth:`send`/:meth:`receive` on one connection, and
        note the protocol has no request ids: a request the server does not answer (no
        handler matched) waits until the timeout.
        """
        framed = self._require()
        body = self._codec.body(payload)
        span = self._client_span(1) if _tracing.enabled() else None
        with _tracing.ending(span):
            async with self._lock:
                if self._orphans:
                    await self._skip_orphans()
                sent = False
                try:
                    # One deadline for the whole exchange: a cancel scope costs as much as a
                    # round trip's worth of bookkeeping, so do not pay for two.
                    with self._deadline():
                        await framed.send_frame(body)
                        sent = True
                        reply = await framed.receive_frame()
                except trio.EndOfChannel:
                    raise ConnectionClosed() from None
                except (trio.Cancelled, trio.TooSlowError):
                    if sent:
                        self._orphans += 1
                    raise
                return self._codec.decode(reply)

    def _client_span(self, count: int) -> _tracing.Span | None:
        """The CLIENT span of a request (or *count* pipelined ones); AsyncAProto's packets
        have no header field for a trace context, so none is sent (trionet.tracing)."""
        host, port = self._peer
        attributes: dict[str, _tracing.AttributeValue] = {
            "rpc.system": "aproto", "server.address": host, "server.port": port,
            "network.transport": "tcp"}
        if count != 1:
            attributes["trionet.aproto.request_count"] = count
        return _tracing.start_span("aproto request", "client", attributes)

    async def request_many(
        self, payloads: Iterable[Mapping[Any, Any] | Packet | str | bytes]
    ) -> list[dict[Any, Any]]:
        """Pipeline: send all *payloads* in one write, then return their replies in order."""
        items = list(payloads)
        span = self._client_span(len(items)) if _tracing.enabled() else None
        with _tracing.ending(span):
            async with self._lock:
                await self._skip_orphans()
                await self.send_many(items)
                replies: list[dict[Any, Any]] = []
                try:
                    for _ in items:
                        replies.append(await self.receive())
                except (trio.Cancelled, trio.TooSlowError):
                    self._orphans += len(items) - len(replies)
                    raise
                return replies

    async def _skip_orphans(self) -> None:
        while self._orphans:
            body = await self._receive_body()
            if body is None:
                raise ConnectionClosed()
            self._orphans -= 1

    def __repr__(self) -> str:
        state = "connected" if self._framed is not None else "not connected"
        return f"<aproto.AsyncClient {self.encoding}, {state}>"
