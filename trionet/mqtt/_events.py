"""What the engine tells the trio side: events, handed over in batches (no paho, no I/O)."""

from __future__ import annotations

from typing import Any, Final

# -- events (engine -> trio), plain tuples, first item is the kind ------------------------------
#: ``(EV_CONNACK, attempt, ok, reason_code, reason, session_present, BrokerLimits)``
EV_CONNACK: Final = 0
#: ``(EV_CONNECT_FAILED, attempt, exception_or_None, reason)``: no CONNACK (network, TLS, ...)
EV_CONNECT_FAILED: Final = 1
#: ``(EV_LOST, reason_code, reason, intentional)``: an established connection ended
EV_LOST: Final = 2
#: ``(EV_ACKED, waiter, reason_code, reason, topic)``: one QoS 1/2 publish completed
EV_ACKED: Final = 3
#: ``(EV_ACKED_N, waiter, count)``: *count* QoS 0 publishes of a batch were written
EV_ACKED_N: Final = 4
#: ``(EV_SUBACK, waiters, topic_filter, reason_code, reason)``
EV_SUBACK: Final = 5
#: ``(EV_UNSUBACK, waiters, topic_filter, reason_code, reason)``
EV_UNSUBACK: Final = 6
#: ``(EV_MESSAGE, message, ack_token_or_None)``; the token is ``(generation, mid, qos)``
EV_MESSAGE: Final = 7
#: ``(EV_CREDIT, count)``: *count* QoS 0 publishes left the job queue
EV_CREDIT: Final = 8
#: ``(EV_FAILED, waiters, reason)``: these operations can no longer complete
EV_FAILED: Final = 9
#: ``(EV_RESUBSCRIBE_FAILED, topic_filter, reason_code, reason)``
EV_RESUBSCRIBE_FAILED: Final = 10
#: ``(EV_DONE, waiter, value)``
EV_DONE: Final = 11
#: ``(EV_NOT_SENT, waiter, reason_code, reason, topic)``: a QoS 1/2 publish breaks a limit the
#: broker announced and was dropped unsent
EV_NOT_SENT: Final = 12

Event = tuple[Any, ...]
AckToken = tuple[int, int, int]
