"""MQTT-specific exceptions, all derived from :class:`trionet.errors.MQTTError`.

The base classes for refused connections, missing connections and timeouts live in
:mod:`trionet.errors` (:class:`~trionet.errors.MQTTConnectError`,
:class:`~trionet.errors.MQTTNotConnected`, :class:`~trionet.errors.MQTTTimeout`); this module adds
the errors only the MQTT client raises.
"""

from __future__ import annotations

from ..errors import MQTTConnectError, MQTTError, MQTTNotConnected

__all__ = [
    "InvalidPayload",
    "InvalidTopic",
    "MQTTAuthError",
    "MQTTPublishError",
    "MQTTSessionTakenOver",
    "MQTTSubscribeError",
]

#: MQTT 5 DISCONNECT reason code "session taken over".
SESSION_TAKEN_OVER = 0x8E


class InvalidTopic(MQTTError, ValueError):
    """A topic name or topic filter breaks the MQTT rules (our side's fault).

    Attributes:
        topic: the offending topic name or filter.
    """

    def __init__(self, topic: str, why: str) -> None:
        super().__init__(f"invalid MQTT topic {topic!r}: {why}", fault="local")
        self.topic = topic


class InvalidPayload(MQTTError, TypeError):
    """A payload is not ``bytes``, ``bytearray``, ``memoryview``, ``str`` or ``None``."""

    def __init__(self, payload: object) -> None:
        super().__init__(
            f"an MQTT payload must be bytes, bytearray, memoryview, str or None, not "
            f"{type(payload).__name__}",
            fault="local",
        )


class MQTTAuthError(MQTTConnectError):
    """MQTT 5 enhanced authentication failed (see :class:`~trionet.mqtt.Authenticator`).

    Either the broker refused (CONNACK, or a DISCONNECT during a re-authentication, with reason
    code 0x86 "bad user name or password", 0x87 "not authorized" or 0x8C "bad authentication
    method"), or the client refused the broker: its data was malformed or too large, the
    exchange took more than :data:`~trionet.mqtt.MAX_AUTH_ROUNDS` rounds, or the broker failed
    to prove itself (a wrong SCRAM signature). Nothing more is sent on that connection.

    Attributes:
        reason_code: the broker's reason code, or None when the client refused the broker.
        method: the authentication method.
    """

    def __init__(self, message: str, *, method: str, reason_code: int | None = None) -> None:
        super().__init__(message, reason_code=reason_code)
        self.method = method


class MQTTSubscribeError(MQTTError):
    """The broker refused a subscription (SUBACK reason code 0x80 or above).

    Attributes:
        topic: the topic filter that was refused.
        reason_code: the SUBACK reason code (MQTT 5 numbering; 0x80 "unspecified error" is all
            that MQTT 3.1.1 brokers report).
    """

    def __init__(self, topic: str, reason_code: int, reason: str = "") -> None:
        text = reason or f"reason code 0x{reason_code:02x}"
        super().__init__(f"the broker refused the subscription to {topic!r}: {text}")
        self.topic = topic
        self.reason_code = reason_code


class MQTTPublishError(MQTTError):
    """The broker refused a QoS 1/2 publish (MQTT 5 PUBACK/PUBREC reason code 0x80 or above),
    or the message breaks a limit the broker announced, so it was never sent (``sent`` False;
    reason code 0x95 "packet too large", 0x9A "retain not supported" or 0x9B "QoS not
    supported").

    Attributes:
        topic: the topic of the refused message.
        reason_code: the reason code the broker sent (or that applies to the broken limit).
        sent: whether the message reached the broker.
    """

    def __init__(
        self, topic: str, reason_code: int, reason: str = "", *, sent: bool = True
    ) -> None:
        text = reason or f"reason code 0x{reason_code:02x}"
        if sent:
            super().__init__(f"the broker refused the message published to {topic!r}: {text}")
        else:
            super().__init__(f"the message for {topic!r} was not sent: {text}", fault="local")
        self.topic = topic
        self.reason_code = reason_code
        self.sent = sent


class MQTTSessionTakenOver(MQTTNotConnected):
    """The broker disconnected the client because another client connected with the same client
    id (MQTT 5 DISCONNECT reason code 0x8E, "session taken over").

    The client does not reconnect (unless ``ReconnectPolicy(retry_takeover=True)``): the two
    clients would keep taking the session from each other. It fails the client's ``async with``
    block; give every client its own id.

    Attributes:
        client_id: the client id both clients used.
        reason_code: 0x8E.
    """

    def __init__(self, client_id: str) -> None:
        super().__init__(
            f"the broker disconnected MQTT client {client_id!r}: another client connected with "
            "the same client id (session taken over, reason code 0x8e); not reconnecting"
        )
        self.client_id = client_id
        self.reason_code = SESSION_TAKEN_OVER
