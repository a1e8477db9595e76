"""The message bus's exceptions, all under :class:`~trionet.errors.TrionetError`.

::

    TrionetError
    └── BusError
        ├── RequestTimeout        (also trio.TooSlowError)
        ├── EnvelopeError         (also ProtocolError: the bytes are not a bus envelope)
        ├── BusClosed             (also trio.ClosedResourceError)
        ├── NoResponseTopic
        └── InvalidPayload        (also ValueError: a payload does not fit a typed handler)
"""

from __future__ import annotations

import trio

from ..errors import Fault, ProtocolError, TrionetError

__all__ = [
    "BusClosed",
    "BusError",
    "EnvelopeError",
    "InvalidPayload",
    "NoResponseTopic",
    "RequestTimeout",
]


class BusError(TrionetError):
    """Base class of every message-bus error."""


class RequestTimeout(BusError, trio.TooSlowError):
    """No reply arrived before the request's deadline.

    It is a :class:`trio.TooSlowError`, so ``except trio.TooSlowError`` catches it as well.

    Attributes:
        topic: the topic the request was published to.
        timeout: the time allowed, in seconds.
        correlation_id: the request's correlation id (a reply arriving later is dropped).
    """

    def __init__(self, topic: str, timeout: float, correlation_id: str) -> None:
        super().__init__(
            f"no reply to the request on {topic!r} within {timeout:g} s "
            f"(correlation id {correlation_id})"
        )
        self.topic = topic
        self.timeout = timeout
        self.correlation_id = correlation_id


class EnvelopeError(BusError, ProtocolError):
    """Bytes received from the transport are not a valid bus envelope.

    Consumers log these and skip them; :func:`~trionet.bus.decode_envelope` raises it.
    """

    def __init__(self, message: str, *, fault: Fault = "remote") -> None:
        ProtocolError.__init__(self, message, fault=fault)


class BusClosed(BusError, trio.ClosedResourceError):
    """The socket is not open (not entered yet, or already closed)."""


class NoResponseTopic(BusError):
    """A reply was asked for a message that names no ``response_topic``."""


class InvalidPayload(BusError, ValueError):
    """A message does not fit its typed handler: the payload cannot be decoded into the
    annotated type, or a required header is missing.

    The handler is not called. The message goes through the application's
    :class:`~trionet.bus.ErrorPolicy` without retries (the same bytes would fail again):
    logged, dead-lettered, or raised as the policy says.

    Attributes:
        topic: the message's topic.
        message_id: its message id (``None`` if it has none).
        correlation_id: its correlation id (``None`` if it has none).
    """

    def __init__(self, text: str, *, topic: str = "", message_id: str | None = None,
                 correlation_id: str | None = None) -> None:
        super().__init__(text)
        self.topic = topic
        self.message_id = message_id
        self.correlation_id = correlation_id
