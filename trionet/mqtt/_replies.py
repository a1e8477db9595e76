"""Requests waiting for their replies, by correlation data (synchronous, no I/O).

:meth:`MQTTClient.request <trionet.mqtt.MQTTClient.request>` registers a waiter under fresh
correlation data (a random per-client prefix and a counter); the router hands every message of
the reply topic to :meth:`Replies.deliver`, which resolves the matching waiter, or counts the
reply as late when nobody waits for it any more.
"""

from __future__ import annotations

import logging
import secrets

import trio

from ._message import MQTTMessage
from ._subscription import _Box

__all__ = ["Replies"]

_log = logging.getLogger("trionet.mqtt")


class Replies:
    """The reply topic of one client and the requests waiting on it.

    Args:
        topic: the topic this client receives replies on.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        #: whether the reply subscription is made
        self.ready = False
        #: held while the reply subscription is being made
        self.lock = trio.Lock()
        #: replies that arrived after their request gave up (or were never asked for)
        self.late = 0
        self._boxes: dict[bytes, _Box[MQTTMessage]] = {}
        self._prefix = secrets.token_bytes(8)
        self._counter = 0

    def expect(self) -> tuple[bytes, _Box[MQTTMessage]]:
        """New correlation data and the waiter its reply resolves."""
        self._counter += 1
        correlation = self._prefix + self._counter.to_bytes(8, "big")
        box: _Box[MQTTMessage] = _Box()
        self._boxes[correlation] = box
        return correlation, box

    def forget(self, correlation: bytes) -> None:
        """The request is over (answered, failed or cancelled)."""
        self._boxes.pop(correlation, None)

    def deliver(self, message: MQTTMessage) -> None:
        """A message on the reply topic: resolve its request, or count it as late."""
        props = message.properties
        correlation = props.correlation_data if props is not None else None
        box = self._boxes.pop(correlation, None) if correlation is not None else None
        if box is None:
            self.late += 1
            _log.debug("dropping a late or unknown MQTT reply on %r", message.topic)
            return
        box.resolve(message)
