"""One retry policy for every component: backoff, attempt limits, a deadline and a circuit breaker.

The same :class:`RetryPolicy` object configures

* MQTT reconnects (``MQTTClient(reconnect=policy)``),
* bus application restarts (``@app.application(..., restart=policy)``),
* Channel and RPC retry-connect (``open_connection(addr, retry=policy)``),
* and any retry loop of your own (:meth:`RetryPolicy.call`).

A policy is an immutable description; each retry loop keeps its own count in a
:class:`RetryState` (``policy.start()``). A :class:`CircuitBreaker` is the one mutable,
shareable part: give the same breaker to several policies (or several clients of one service)
and once enough attempts in a row have failed, further attempts fail fast
(:exc:`~trionet.errors.CircuitOpenError`) or wait (reconnect loops), until the recovery time has
passed and one trial attempt is let through::

    import trio
    from trionet.supervision import Backoff, CircuitBreaker, RetryPolicy

    breaker = CircuitBreaker(failure_threshold=3, recovery_time=5.0)
    policy = RetryPolicy(Backoff(initial=0.01, maximum=0.05), max_attempts=4, breaker=breaker)

    async def main() -> None:
        tries = 0

        async def flaky() -> str:
            nonlocal tries
            tries += 1
            if tries < 3:
                raise ConnectionRefusedError("not yet")
            return "up"

        assert await policy.call(flaky, retry_on=(ConnectionRefusedError,)) == "up"
        assert tries == 3 and breaker.state == "closed"

    trio.run(main)

Time is trio's clock (:func:`trio.current_time`), so these objects are used from trio tasks.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import trio

from .errors import CircuitOpenError, ConfigurationError

__all__ = [
    "Backoff", "CircuitBreaker", "CircuitOpenError", "JitterMode", "RetryPolicy", "RetryState",
]

T = TypeVar("T")

#: How jitter changes a delay: ``"spread"`` multiplies it by a random number in
#: ``[1 - jitter, 1 + jitter]``; ``"shorten"`` takes up to *jitter* of it away (never longer
#: than the schedule, so the maximum is a real cap).
JitterMode = Literal["spread", "shorten"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * factor ** (attempt - 1)``, capped.

    Args:
        initial: the first delay, in seconds.
        factor: how much each further delay grows.
        maximum: the largest delay (before jitter).
        jitter: a fraction between 0 and 1 that randomises each delay, so that many clients
            cut off at the same moment do not all come back in the same instant.
        jitter_mode: ``"spread"`` (default): the delay times a random number in
            ``[1 - jitter, 1 + jitter]``; ``"shorten"``: the delay minus a random part of up to
            *jitter* of it.

    Raises:
        ConfigurationError: a value is out of range.
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1
    jitter_mode: JitterMode = "spread"

    def __post_init__(self) -> None:
        if self.jitter_mode not in ("spread", "shorten"):
            raise ConfigurationError("Backoff.jitter_mode is 'spread' or 'shorten'")
        jitter_ok = (0 <= self.jitter < 1 if self.jitter_mode == "spread"
                     else 0 <= self.jitter <= 1)
        if self.initial < 0 or self.maximum < 0 or self.factor < 1 or not jitter_ok:
            raise ConfigurationError(
                "Backoff needs initial >= 0, maximum >= 0, factor >= 1 and 0 <= jitter < 1 "
                "(<= 1 when jitter_mode='shorten')"
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before retry number *attempt* (counting from 1)."""
        base = min(self.maximum, self.initial * self.factor ** min(max(0, attempt - 1), 64))
        if not self.jitter:
            return base
        draw = (rng or random).random()
        if self.jitter_mode == "shorten":
            return base - base * self.jitter * draw
        return base * (1 - self.jitter + 2 * self.jitter * draw)


@dataclass(eq=False)
class CircuitBreaker:
    """Stop trying a service that keeps failing; try again after a pause.

    *Closed* (normal): attempts go through; *failure_threshold* failures in a row open it.
    *Open*: attempts are refused (:meth:`check` raises :exc:`~trionet.errors.CircuitOpenError`)
    until *recovery_time* seconds have passed; then it is *half-open*: one trial attempt goes
    through; its success closes the breaker, its failure opens it again for another
    *recovery_time*. Share one breaker between the policies (or clients) of one service.

    Attributes:
        opened: how many times the breaker has opened.
    """

    failure_threshold: int = 5
    recovery_time: float = 30.0
    opened: int = field(default=0, init=False)
    _failures: int = field(default=0, init=False, repr=False)
    _open_until: float | None = field(default=None, init=False, repr=False)
    _trial_running: bool = field(default=False, init=False, repr=False)
    _trial_started: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.recovery_time < 0:
            raise ConfigurationError(
                "CircuitBreaker needs failure_threshold >= 1 and recovery_time >= 0"
            )

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        """``"closed"``, ``"open"`` or ``"half_open"``, now."""
        if self._open_until is None:
            return "closed"
        return "open" if trio.current_time() < self._open_until else "half_open"

    def retry_after(self) -> float:
        """Seconds until the breaker lets an attempt through (0 when it does now)."""
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - trio.current_time())

    def check(self) -> None:
        """Raise :exc:`~trionet.errors.CircuitOpenError` unless an attempt may go through now.

        In the half-open state only the first caller passes (the trial); others are refused
        until the trial has been recorded (or, if it never is, for another recovery time).
        """
        state = self.state
        if state == "closed":
            return
        now = trio.current_time()
        if state == "half_open" and (not self._trial_running
                                     or now - self._trial_started >= self.recovery_time):
            self._trial_running = True
            self._trial_started = now
            return
        raise CircuitOpenError(
            f"circuit open after {self._failures} failures in a row; "
            f"next attempt in {self.retry_after():.2f} s", retry_after=self.retry_after()
        )

    def record_success(self) -> None:
        """An attempt succeeded: close the breaker."""
        self._failures = 0
        self._open_until = None
        self._trial_running = False

    def record_failure(self) -> None:
        """An attempt failed: count it; open (or re-open) the breaker at the threshold."""
        self._failures += 1
        if self._trial_running or self._failures >= self.failure_threshold:
            self._open_until = trio.current_time() + self.recovery_time
            self._trial_running = False
            self.opened += 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a component retries: the backoff between attempts and when to give up.

    Args:
        backoff: the delays between attempts.
        max_attempts: retries allowed after a failure before giving up (``None``: no limit).
            For restarts and reconnects, the number of restarts or reconnect attempts.
        reset_after: an attempt that stayed up (a connection, an application run) this many
            seconds starts the count and the backoff again from the beginning.
        deadline: seconds after the first failure after which no further attempt is made
            (``None``: no deadline). aiomas's ``open_connection(timeout=)`` is this.
        breaker: a shared :class:`CircuitBreaker`, or ``None``.

    Raises:
        ConfigurationError: a value is out of range.
    """

    backoff: Backoff = Backoff()
    max_attempts: int | None = None
    reset_after: float = 10.0
    deadline: float | None = None
    breaker: CircuitBreaker | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ConfigurationError("RetryPolicy.max_attempts must be >= 0 or None")
        if self.reset_after < 0 or (self.deadline is not None and self.deadline < 0):
            raise ConfigurationError("RetryPolicy.reset_after and deadline must be >= 0")

    def start(self) -> RetryState:
        """A fresh count for one retry loop."""
        return RetryState(self)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[Exception], ...] = (OSError,),
    ) -> T:
        """Await ``fn()`` until it succeeds, retrying on *retry_on* errors as the policy says.

        Raises:
            CircuitOpenError: the breaker refused an attempt.
            Exception: the last error, once the policy gives up (or any error not in
                *retry_on*, at once).
        """
        state = self.start()
        while True:
            if self.breaker is not None:
                self.breaker.check()
            try:
                result = await fn()
            except retry_on:
                delay = state.failed()
                if delay is None:
                    raise
                await trio.sleep(delay)
                continue
            state.succeeded()
            return result


class RetryState:
    """One retry loop's count under a :class:`RetryPolicy` (not shared between loops)."""

    __slots__ = ("_first_failure", "_up_since", "attempts", "policy")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        #: failures counted since the last reset (the next delay is for retry ``attempts``)
        self.attempts = 0
        self._first_failure: float | None = None
        self._up_since: float | None = None

    def up(self) -> None:
        """The attempt succeeded and is now running (a connection is up): the breaker closes,
        and the count starts again once it has stayed up ``reset_after`` seconds."""
        self._up_since = trio.current_time()
        if self.policy.breaker is not None:
            self.policy.breaker.record_success()

    def began(self) -> None:
        """A run began whose start proves nothing yet (an application run): only its length
        counts (``reset_after``); the breaker is left as it is."""
        self._up_since = trio.current_time()

    def succeeded(self) -> None:
        """The attempt succeeded and is finished: the count starts again."""
        self.attempts = 0
        self._first_failure = None
        self._up_since = None
        if self.policy.breaker is not None:
            self.policy.breaker.record_success()

    def failed(self) -> float | None:
        """Count a failure; return the delay before the next attempt, or ``None`` to give up.

        A failure after a run that lasted ``reset_after`` seconds starts the count again.
        """
        now = trio.current_time()
        if self._up_since is not None and now - self._up_since >= self.policy.reset_after:
            self.attempts = 0
            self._first_failure = None
            if self.policy.breaker is not None:
                self.policy.breaker.record_success()
        self._up_since = None
        if self.policy.breaker is not None:
            self.policy.breaker.record_failure()
        if self._first_failure is None:
            self._first_failure = now
        policy = self.policy
        if policy.max_attempts is not None and self.attempts >= policy.max_attempts:
            return None
        self.attempts += 1
        delay = policy.backoff.delay(self.attempts)
        if policy.deadline is not None:
            left = self._first_failure + policy.deadline - now
            if left <= 0:
                return None
            delay = min(delay, left)
        return delay

