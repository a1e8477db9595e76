"""Flow control on the trio side: bounded buffering of received messages and their acks.

No I/O and no trio task: the client wires two callbacks in (pause or resume reading from the
broker; send acknowledgements), everything else is counting.

* Every received message held in a buffer (a ``subscription()`` block, the ``on_message``
  queue, their overflow lists) counts in :attr:`FlowControl.held`. At ``max_buffered`` the
  client stops reading from the broker (TCP backpressure); at half of it, it reads again.
* A QoS 1/2 message is acknowledged once it is in a buffer (``ack="received"``), or once
  every consumer it went to is done with it (``ack="processed"``): a :class:`Delivery` counts
  those down. Acknowledgements made while a batch of events is routed go out together after
  the batch (:meth:`FlowControl.end_batch`).
"""

from __future__ import annotations

from collections.abc import Callable

from ._events import AckToken

__all__ = ["Delivery", "FlowControl"]


class FlowControl:
    """Counts buffered messages and collects acknowledgements (see the module docstring).

    Args:
        max_buffered: messages held in all buffers before reading pauses.
        pause: called with True to stop reading from the broker, False to read again.
        send_acks: sends acknowledgements now.
    """

    __slots__ = ("_acks", "_in_batch", "_pause", "_send_acks", "held", "max_buffered", "paused",
                 "resume_level")

    def __init__(self, max_buffered: int, *, pause: Callable[[bool], None],
                 send_acks: Callable[[list[AckToken]], None]) -> None:
        self.max_buffered = max_buffered
        self.resume_level = max_buffered // 2
        self.held = 0
        self.paused = False
        self._pause = pause
        self._send_acks = send_acks
        self._acks: list[AckToken] = []
        self._in_batch = False

    # -- buffers --------------------------------------------------------------------------------

    def hold(self) -> None:
        """A message entered a buffer."""
        self.held += 1

    def consumed(self) -> None:
        """A message left a buffer (received or dropped)."""
        self.held -= 1
        if self.paused and self.held <= self.resume_level:
            self.paused = False
            self._pause(False)

    # -- acknowledgements -----------------------------------------------------------------------

    def ack(self, token: AckToken) -> None:
        """Acknowledge a message: with the batch being routed, else at once."""
        if self._in_batch:
            self._acks.append(token)
        else:
            self._send_acks([token])

    def begin_batch(self) -> None:
        """A batch of events is being routed: collect acknowledgements."""
        self._in_batch = True

    def end_batch(self) -> bool:
        """The batch is routed: send its acknowledgements, pause reading if the buffers are
        full. Returns whether reading is paused."""
        self._in_batch = False
        if self._acks:
            tokens = self._acks
            self._acks = []
            self._send_acks(tokens)
        if not self.paused and self.held >= self.max_buffered:
            self.paused = True
            self._pause(True)
        return self.paused

    def abort_batch(self) -> None:
        """Routing the batch failed (a bug): stop collecting."""
        self._in_batch = False


class Delivery:
    """The acknowledgement of one QoS 1/2 message that several consumers (or a full buffer)
    must release first: sent once :meth:`accepted` was called *remaining* times."""

    __slots__ = ("flow", "remaining", "token")

    def __init__(self, flow: FlowControl, token: AckToken, remaining: int) -> None:
        self.flow = flow
        self.token = token
        self.remaining = remaining

    def accepted(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.flow.ack(self.token)
