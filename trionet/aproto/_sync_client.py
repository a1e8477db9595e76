"""The blocking AsyncAProto client, for scripts (the original's ``asyncapy.client.Client``)."""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from .._tls import translate_handshake_error
from ..errors import TLSNotSpoken
from ._client import _ClientBase, plaintext_server_error
from ._errors import ConnectionClosed
from ._packet import Packet, PacketDecoder

__all__ = ["Client"]

_RECEIVE_SIZE = 65536


class Client(_ClientBase):
    """A blocking AsyncAProto client (same constructor as the original).

    It is not thread-safe: use one client per thread. It parses fragmented and pipelined
    replies exactly, and keeps its connection open for any number of requests.

    Args:
        byteorder: the Content-Length byte order, ``"big"`` (default) or ``"little"``.
        header_size: bytes in the Content-Length header, 1 to 8 (default 4).
        tls: True (default, as the original): TLS with certificate and hostname verification
            against the system CAs; an :class:`ssl.SSLContext` of your own; False: plain TCP.
            (The original wrapped the socket without any verification.)
        encoding: the encoding of the packets sent, ``"json"`` (default) or ``"ziproto"``.
            Replies are decoded by their own Content-Encoding byte.
        timeout: the socket timeout in seconds for connecting, sending and each read (default
            60; None = block forever). Expiry raises :class:`TimeoutError`.
        max_packet_size: the largest packet accepted or sent (default 16 MiB).

    Example::

        with Client(tls=False) as client:
            client.connect("127.0.0.1", port)
            client.send({"cmd": "ping"})
            reply = client.receive()

    Raises:
        ConfigurationError: an invalid argument.
    """

    def _reset_connection(self) -> None:
        self.sock: socket.socket | None = None
        self._decoder: PacketDecoder | None = None
        self._bodies: deque[bytes] = deque()
        self._eof = False

    @property
    def connected(self) -> bool:
        """True between :meth:`connect` and :meth:`disconnect`."""
        return self.sock is not None

    def _require(self) -> socket.socket:
        if self.sock is None:
            raise ConnectionError("the client is not connected; call connect() first")
        return self.sock

    def connect(self, hostname: str, port: int, *, server_hostname: str | None = None) -> None:
        """Connect (and do the TLS handshake, if any).

        Raises:
            TLSVerificationError: the server's certificate could not be verified (the message
                names the host and the reason; the :mod:`ssl` error is ``__cause__``).
            TLSNotSpoken: the server answered the TLS handshake in plain text: it does not
                speak TLS (connect with ``tls=False``, or give the server a certificate).
            OSError: the connection failed (``TimeoutError`` on timeout, an
                :class:`ssl.SSLError` for other TLS failures).
            RuntimeError: already connected.
        """
        if self.sock is not None:
            raise RuntimeError("already connected; disconnect() first")
        self._check_address(hostname, port)
        sock = socket.create_connection((hostname, port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                name = server_hostname or hostname
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=name)
                except ssl.SSLError as exc:
                    error = translate_handshake_error(exc, name)
                    if error is None:
                        raise
                    if isinstance(error, TLSNotSpoken):
                        error = plaintext_server_error(error, port)
                    raise error from exc
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._decoder = PacketDecoder(
            header_size=self.header_size,
            byteorder=self.byteorder,
            max_packet_size=self.max_packet_size,
        )
        self._bodies.clear()
        self._eof = False

    def disconnect(self) -> None:
        """Close the connection (no error if it is not open)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def send(self, payload: Mapping[Any, Any] | Packet | str | bytes) -> None:
        """Send one packet.

        Args:
            payload: a dict (or any mapping), a :class:`Packet`, or a JSON object as
                ``str``/``bytes``.

        Raises:
            AProtoError: *payload* is a string that is not a JSON object (``fault="local"``).
            CodecError: the payload cannot be encoded.
            OSError: the connection failed or timed out.
        """
        sock = self._require()
        sock.sendall(self._codec.packet(self._codec.body(payload)))

    def send_many(self, payloads: Iterable[Mapping[Any, Any] | Packet | str | bytes]) -> None:
        """Send several packets in one write (same errors as :meth:`send`)."""
        sock = self._require()
        codec = self._codec
        sock.sendall(b"".join([codec.packet(codec.body(p)) for p in payloads]))

    def _receive_body(self) -> bytes | None:
        sock = self._require()
        decoder = self._decoder
        assert decoder is not None
        while not self._bodies:
            if self._eof:
                return None
            data = sock.recv(_RECEIVE_SIZE)
            if not data:
                self._eof = True
            self._bodies.extend(decoder.feed_frames(data))
        return self._bodies.popleft()

    def receive_raw(self) -> bytes:
        """Return the next complete packet, headers included; ``b""`` if the server closed.

        Raises:
            IncompleteFrame: the server closed the connection in the middle of a packet.
            FrameTooLarge: the server announced a packet above ``max_packet_size``.
            TimeoutError: the timeout expired (the client stays usable).
        """
        body = self._receive_body()
        return b"" if body is None else self._codec.packet(body)

    def receive(self) -> dict[Any, Any]:
        """Return the payload of the next packet, decoded by its own Content-Encoding.

        Raises:
            ConnectionClosed: the server closed the connection cleanly.
            AProtoError: a bad version/encoding byte or payload (``fault="remote"``).
            IncompleteFrame, FrameTooLarge, TimeoutError: as :meth:`receive_raw`.
        """
        body = self._receive_body()
        if body is None:
            raise ConnectionClosed()
        return self._codec.decode(body)

    def request(self, payload: Mapping[Any, Any] | Packet | str | bytes) -> dict[Any, Any]:
        """Send one packet and return the reply's payload."""
        self.send(payload)
        return self.receive()

    def request_many(
        self, payloads: Iterable[Mapping[Any, Any] | Packet | str | bytes]
    ) -> list[dict[Any, Any]]:
        """Pipeline: send all *payloads* in one write, then return their replies in order."""
        items = list(payloads)
        self.send_many(items)
        return [self.receive() for _ in items]

    def __repr__(self) -> str:
        state = "connected" if self.sock is not None else "not connected"
        return f"<aproto.Client {self.encoding}, {state}>"
