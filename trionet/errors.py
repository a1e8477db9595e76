"""The trionet exception tree.

Every error trionet raises on purpose derives from :class:`TrionetError`, in three branches:

* :class:`ProtocolError`: something on the wire breaks a protocol. It records *whose fault* the
  problem was: ``fault="remote"`` when the peer sent something we cannot accept,
  ``fault="local"`` when our own side asked for something impossible (for example encoding a
  frame larger than the configured limit). Each component's base error (``MQTTError``,
  ``MailError``...) sits here, as in mtaio, whose names keep their spelling.
* :class:`PeerFailure`: the other side failed us, whatever the bytes said. Its
  :class:`ConnectionFailure` branch holds every "no working connection" error (refused,
  unreachable, closed, not connected), and :class:`RemoteException` (and Kafka's
  ``KafkaRemoteError``) says the peer's handler raised. Catch :class:`ConnectionFailure` to
  retry or reconnect whatever the component.
* :class:`ConfigurationError`: a value given to trionet is wrong.

The errors of the second branch are *also* their component's error (``MQTTNotConnected`` is an
``MQTTError``, ``RemoteException`` a ``ChannelError``), so code that catches a component's
base, or :class:`ProtocolError` as mtaio's users do, still catches them.

::

    TrionetError
    ├── ProtocolError                (fault: "local" | "remote")
    │   ├── FrameError
    │   │   ├── FrameTooLarge        (size, limit)
    │   │   └── IncompleteFrame      (expected, received)
    │   ├── CodecError               (codec; also ValueError)
    │   ├── ASGIError
    │   ├── MQTTError
    │   │   ├── MQTTConnectError     (reason_code)                     + ConnectionFailure
    │   │   ├── MQTTNotConnected                                       + ConnectionFailure
    │   │   └── MQTTTimeout
    │   ├── KafkaError
    │   ├── MailError
    │   │   ├── SMTPError            (code)
    │   │   └── IMAPError
    │   ├── ChannelError
    │   │   ├── RemoteException      (origin, remote_traceback, remote_type)  + PeerFailure
    │   │   └── ChannelClosed        (also trio.BrokenResourceError, ConnectionResetError)
    │   │                                                              + ConnectionFailure
    │   ├── AProtoError              (error_code)
    │   └── TLSError                 (host; also trio.BrokenResourceError)
    │       ├── TLSVerificationError (the peer's certificate could not be verified)
    │       └── TLSNotSpoken         (the peer answered the TLS handshake in plain text)
    ├── PeerFailure                  (the peer is gone, unreachable, or its handler raised)
    │   ├── ConnectionFailure        (MQTTConnectError, MQTTNotConnected, ChannelClosed, and
    │   │                             the components' KafkaConnectionError,
    │   │                             MailConnectionError, aproto's ConnectionClosed)
    │   └── RemoteException, KafkaRemoteError
    └── ConfigurationError
"""

from __future__ import annotations

from typing import Literal

import trio

__all__ = [
    "AProtoError",
    "ASGIError",
    "ChannelClosed",
    "ChannelError",
    "CircuitOpenError",
    "CodecError",
    "ConfigurationError",
    "ConnectionFailure",
    "Fault",
    "FrameError",
    "FrameTooLarge",
    "IMAPError",
    "IncompleteFrame",
    "KafkaError",
    "MQTTConnectError",
    "MQTTError",
    "MQTTNotConnected",
    "MQTTTimeout",
    "MTAIOError",
    "MailError",
    "PeerFailure",
    "ProtocolError",
    "RemoteException",
    "SMTPError",
    "TLSError",
    "TLSNotSpoken",
    "TLSVerificationError",
    "TrionetError",
]

Fault = Literal["local", "remote"]


class TrionetError(Exception):
    """Root of every exception trionet raises on purpose."""


#: mtaio's name for its root exception.
MTAIOError = TrionetError


class ConfigurationError(TrionetError, ValueError):
    """A configuration value is missing, unknown or of the wrong type (always our side's fault)."""


class ProtocolError(TrionetError):
    """Something on the wire (or about to go on it) breaks the protocol.

    Attributes:
        fault: ``"remote"`` if the peer sent something invalid, ``"local"`` if our own side tried
            to send something the protocol does not allow.
    """

    def __init__(self, message: str, *, fault: Fault = "remote") -> None:
        super().__init__(message)
        self.fault: Fault = fault


class PeerFailure(TrionetError):
    """The other side failed us: it cannot be reached, the connection to it is gone, or its
    handler raised while answering (:class:`RemoteException`).

    Not about the bytes (those are :class:`ProtocolError`), so retrying, reconnecting or asking
    another peer may help.
    """


class ConnectionFailure(PeerFailure):
    """There is no working connection: it was refused, the peer is unreachable, the connection
    broke or closed, or the client is not connected.

    Every component's connection error is one (:class:`MQTTConnectError`,
    :class:`MQTTNotConnected`, :class:`ChannelClosed`, ``KafkaConnectionError``,
    ``MailConnectionError``, AProto's ``ConnectionClosed``), besides being its component's error.
    """


class CircuitOpenError(ConnectionFailure):
    """A :class:`~trionet.supervision.CircuitBreaker` refused the attempt: the service failed
    too often in a row, and its recovery time has not passed yet.

    Attributes:
        retry_after: seconds until the breaker lets a trial attempt through.
    """

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- framing and codecs -------------------------------------------------------------------------


class FrameError(ProtocolError):
    """A length-prefixed frame is malformed."""


class FrameTooLarge(FrameError):
    """A frame's announced (or requested) size exceeds ``max_frame_size``.

    Raised by the decoder from the header alone, before any payload is buffered.

    Attributes:
        size: the size the header announced (or the payload size we were asked to encode).
        limit: the configured ``max_frame_size``.
    """

    def __init__(self, size: int, limit: int, *, fault: Fault = "remote") -> None:
        who = "peer announced" if fault == "remote" else "refusing to send"
        super().__init__(
            f"{who} a frame of {size} bytes, larger than max_frame_size={limit}", fault=fault
        )
        self.size = size
        self.limit = limit


class IncompleteFrame(FrameError):
    """The stream ended in the middle of a frame.

    Attributes:
        expected: bytes the current frame (header included) needs, or the header size if the
            header itself was cut short.
        received: bytes of that frame that arrived before end-of-file.
    """

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(
            f"connection closed mid-frame: got {received} of {expected} bytes", fault="remote"
        )
        self.expected = expected
        self.received = received


class CodecError(ProtocolError, ValueError):
    """A value could not be encoded, or bytes could not be decoded, by a codec.

    Also a :class:`ValueError`, as :class:`json.JSONDecodeError` is, so code written for
    ``json.loads`` catches it.

    Attributes:
        codec: the codec's name (``"json"``, ``"msgpack"``, ``"ziproto"``, ...).
    """

    def __init__(self, message: str, *, codec: str, fault: Fault = "remote") -> None:
        super().__init__(f"{codec}: {message}", fault=fault)
        self.codec = codec


# -- components ---------------------------------------------------------------------------------


class ASGIError(ProtocolError):
    """The ASGI layer received or was asked to send something invalid.

    mtaio's spelling ``raise ASGIError("no such user", status_code=404)`` in a handler answers
    with that status and ``{"error": "no such user"}``, as an
    :class:`~trionet.asgi.HTTPException` would; without ``status_code`` the error is answered
    with 500 (through ``handle_error``).

    Args:
        message: what went wrong (the response's ``error`` when ``status_code`` is given).
        status_code: the HTTP status to answer with, 300-599, or ``None``.
        fault: whose fault it was; by default ``"local"`` for a 5xx ``status_code``, else
            ``"remote"``.

    Attributes:
        status_code: the HTTP status to answer with, or ``None``.
    """

    # Set per instance when given; the class default says "no status" (answered with 500).
    status_code: int | None = None

    def __init__(
        self, message: str, *, status_code: int | None = None, fault: Fault | None = None
    ) -> None:
        if status_code is not None:
            if isinstance(status_code, bool) or not isinstance(status_code, int):
                raise TypeError(f"status_code must be an int, got {status_code!r}")
            if not 300 <= status_code <= 599:
                raise ValueError(f"status_code must be 300-599, got {status_code}")
            self.status_code = status_code
        if fault is None:
            fault = "local" if status_code is not None and status_code >= 500 else "remote"
        super().__init__(message, fault=fault)


class MQTTError(ProtocolError):
    """Base class of MQTT client errors."""


class MQTTConnectError(MQTTError, ConnectionFailure):
    """The broker refused the connection, or could not be reached.

    Attributes:
        reason_code: the CONNACK reason code (MQTT 5 numbering; ``None`` if unreachable).
    """

    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message, fault="remote")
        self.reason_code = reason_code


class MQTTNotConnected(MQTTError, ConnectionFailure):
    """An operation needs a connection to the broker and there is none."""

    def __init__(self, message: str = "the MQTT client is not connected") -> None:
        super().__init__(message, fault="local")


class MQTTTimeout(MQTTError, trio.TooSlowError):
    """The broker did not complete a handshake in time."""


class KafkaError(ProtocolError):
    """Base class of Kafka client errors."""


class MailError(ProtocolError):
    """Base class of mail (SMTP and IMAP) errors."""


class SMTPError(MailError):
    """An SMTP server refused a command.

    Attributes:
        code: the server's reply code (``None`` when the connection failed before a reply).
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, fault="remote")
        self.code = code


class IMAPError(MailError):
    """An IMAP server refused a command or answered something we cannot parse."""


class ChannelError(ProtocolError):
    """Base class of request-reply Channel errors."""


class RemoteException(ChannelError, PeerFailure):
    """The peer's handler raised while answering our request.

    Attributes:
        origin: a description of the peer (its address).
        remote_traceback: the traceback text the peer sent.
        remote_type: the remote exception's type name, when the peer sent one.
    """

    def __init__(self, origin: str, remote_traceback: str, remote_type: str | None = None) -> None:
        what = f"{remote_type} raised" if remote_type else "exception raised"
        super().__init__(f"{what} by {origin}:\n{remote_traceback}", fault="remote")
        self.origin = origin
        self.remote_traceback = remote_traceback
        self.remote_type = remote_type


class ChannelClosed(
    ChannelError, ConnectionFailure, trio.BrokenResourceError, ConnectionResetError
):
    """The connection behind a Channel is gone; pending and future requests fail with this."""


class AProtoError(ProtocolError):
    """An AsyncAProto packet is invalid.

    Attributes:
        error_code: the protocol's error name, e.g. ``"ERR_REQUEST_MALFORMED"``.
    """

    def __init__(self, message: str, *, error_code: str = "ERR_REQUEST_MALFORMED",
                 fault: Fault = "remote") -> None:
        super().__init__(message, fault=fault)
        self.error_code = error_code


class TLSError(ProtocolError, trio.BrokenResourceError):
    """The TLS handshake with *host* failed.

    Also a :class:`trio.BrokenResourceError`, which is what code written before this class existed
    caught. The :mod:`ssl` error that caused it is ``__cause__``.

    Attributes:
        host: the host name (or address) the connection was for, or ``None`` when unknown.
    """

    def __init__(self, message: str, *, host: str | None = None, fault: Fault = "remote") -> None:
        super().__init__(message, fault=fault)
        self.host = host


class TLSVerificationError(TLSError):
    """The peer's certificate could not be verified (untrusted issuer, wrong host name, expired).

    The message names the host and the reason the :mod:`ssl` module gave.
    """


class TLSNotSpoken(TLSError):
    """We started a TLS handshake and the peer answered in plain text: it does not speak TLS
    on that port (connect without TLS, or give the server a certificate)."""
