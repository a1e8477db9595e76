"""The MQTT client's reconnect policy: a :class:`~trionet.supervision.RetryPolicy` plus MQTT's
session-takeover rule."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigurationError
from ..supervision import Backoff, CircuitBreaker, JitterMode, RetryPolicy

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
        jitter_mode: ``"shorten"`` (default, as above) or ``"spread"`` (see
            :class:`~trionet.supervision.Backoff`).
        breaker: a :class:`~trionet.supervision.CircuitBreaker` (shared with other clients of
            the same broker, for instance): while it is open, the client waits for it to let a
            trial attempt through instead of connecting.

    ``MQTTClient(reconnect=)`` also takes a :class:`~trionet.supervision.RetryPolicy`, the
    policy object every trionet component shares (:meth:`from_retry`).

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
    jitter_mode: JitterMode = "shorten"
    breaker: CircuitBreaker | None = None

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
        _ = self.backoff  # validates the jitter mode

    @classmethod
    def from_retry(cls, policy: RetryPolicy, *, retry_takeover: bool = False) -> ReconnectPolicy:
        """The reconnect policy that follows a shared :class:`~trionet.supervision.RetryPolicy`:
        its backoff, ``max_attempts`` (failed attempts in a row), ``reset_after`` (as
        *stable_after*) and breaker.

        Raises:
            ConfigurationError: the policy has a ``deadline`` (a reconnecting client has no
                overall deadline; use ``max_attempts``).
        """
        if policy.deadline is not None:
            raise ConfigurationError(
                "a reconnect policy has no deadline; limit it with max_attempts instead"
            )
        backoff = policy.backoff
        return cls(initial_delay=backoff.initial, max_delay=backoff.maximum,
                   multiplier=backoff.factor, jitter=backoff.jitter,
                   max_attempts=policy.max_attempts or None, stable_after=policy.reset_after,
                   retry_takeover=retry_takeover, jitter_mode=backoff.jitter_mode,
                   breaker=policy.breaker)

    @property
    def backoff(self) -> Backoff:
        """The waits as a shared :class:`~trionet.supervision.Backoff`."""
        return Backoff(self.initial_delay, self.multiplier, self.max_delay, self.jitter,
                       self.jitter_mode)

    @property
    def retry(self) -> RetryPolicy:
        """This policy as the shared :class:`~trionet.supervision.RetryPolicy`."""
        return RetryPolicy(self.backoff, max_attempts=self.max_attempts,
                           reset_after=self.stable_after, breaker=self.breaker)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt number *attempt* (0 for the first), jitter included."""
        return self.backoff.delay(attempt + 1, rng)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the wait before each attempt; ends after *max_attempts* values (if set)."""
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield self.delay(attempt, rng)
            attempt += 1
