"""Exponential backoff with jitter, for reconnecting (and for any retry loop)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = ["ReconnectPolicy"]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How an :class:`~trionet.mqtt.MQTTClient` waits between reconnect attempts.

    The n-th wait (counting from 0) is ``min(max_delay, initial_delay * multiplier ** n)``,
    shortened by a random fraction of up to *jitter* of itself, so that many clients cut off at
    the same moment do not all come back in the same instant.

    The sequence restarts only once a connection has stayed up for *stable_after* seconds. A
    connection lost sooner (a broker that accepts and then drops us, two clients fighting over
    one client id) continues it where it was, so such a loop slows down instead of spinning.

    Args:
        initial_delay: seconds before the first attempt (0 retries at once).
        max_delay: the cap on any wait.
        multiplier: growth factor per attempt (at least 1).
        jitter: fraction of each wait that is randomised, 0 (none) to 1 ("full jitter").
        max_attempts: give up after this many failed attempts in a row (None: never give up).
            When the client gives up, its ``async with`` block fails with
            :exc:`~trionet.errors.MQTTConnectError`.
        stable_after: seconds a connection must last before the waits start again from
            *initial_delay*.
        retry_takeover: what to do when an MQTT 5 broker disconnects the client because another
            client connected with the same client id (reason code 0x8E, "session taken
            over"). False (default): do not reconnect (that would take the session back and
            start a fight); the ``async with`` block fails with
            :exc:`~trionet.mqtt.MQTTSessionTakenOver`. True: reconnect with the backoff.

    Raises:
        ConfigurationError: a value is out of range.
    """

    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    stable_after: float = 10.0
    retry_takeover: bool = False

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("reconnect delays must not be negative")
        if self.multiplier < 1:
            raise ConfigurationError("the reconnect multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("reconnect jitter must be between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1 (or None)")
        if self.stable_after < 0:
            raise ConfigurationError("stable_after must not be negative")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt number *attempt* (0 for the first), jitter included."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(attempt, 64))
        if self.jitter:
            base -= base * self.jitter * (rng or random).random()
        return base

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the wait before each attempt; ends after *max_attempts* values (if set)."""
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield self.delay(attempt, rng)
            attempt += 1
