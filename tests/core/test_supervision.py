"""The shared retry policy: backoff, attempt limits, deadlines, reset after a long run, and the
circuit breaker (trio's autojump clock: no real waiting)."""

from __future__ import annotations

import random

import pytest
import trio

from trionet.errors import CircuitOpenError, ConfigurationError, ConnectionFailure
from trionet.supervision import Backoff, CircuitBreaker, RetryPolicy


def test_backoff_schedule_and_jitter_modes() -> None:
    plain = Backoff(initial=1, factor=2, maximum=5, jitter=0)
    assert [plain.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    rng = random.Random(7)
    spread = [Backoff(initial=1, jitter=0.5).delay(1, rng) for _ in range(200)]
    assert min(spread) < 1 < max(spread) and min(spread) >= 0.5 and max(spread) <= 1.5
    shorten = [Backoff(initial=1, jitter=1, jitter_mode="shorten").delay(1, rng)
               for _ in range(200)]
    assert min(shorten) >= 0 and max(shorten) <= 1  # never longer than the schedule
    assert Backoff(initial=1, factor=10, maximum=100, jitter=0).delay(10_000) == 100  # no overflow


@pytest.mark.parametrize("bad", [
    {"initial": -1}, {"factor": 0.5}, {"maximum": -1}, {"jitter": 1.0}, {"jitter": -0.1},
    {"jitter_mode": "wild"},
])
def test_backoff_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**bad)  # type: ignore[arg-type]


def test_retry_policy_rejects_bad_values() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=-1)
    with pytest.raises(ConfigurationError):
        RetryPolicy(deadline=-1)
    with pytest.raises(ConfigurationError):
        CircuitBreaker(failure_threshold=0)


async def test_max_attempts_and_reset_after_a_long_run(autojump_clock: trio.abc.Clock) -> None:
    policy = RetryPolicy(Backoff(initial=1, factor=2, jitter=0), max_attempts=2, reset_after=10)
    state = policy.start()
    assert state.failed() == 1
    assert state.failed() == 2
    assert state.failed() is None  # a third retry is not allowed
    state = policy.start()
    state.began()
    assert state.failed() == 1
    state.began()
    await trio.sleep(3)  # a short run: the count goes on
    assert state.failed() == 2
    state.began()
    await trio.sleep(10)  # a run that lasted reset_after: the count starts again
    assert state.failed() == 1


async def test_deadline_bounds_the_retries(autojump_clock: trio.abc.Clock) -> None:
    policy = RetryPolicy(Backoff(initial=4, factor=1, jitter=0), deadline=10)
    state = policy.start()
    assert state.failed() == 4
    await trio.sleep(4)
    assert state.failed() == 4
    await trio.sleep(4)
    assert state.failed() == 2  # only what is left of the deadline
    await trio.sleep(2)
    assert state.failed() is None


async def test_call_retries_only_the_listed_errors(autojump_clock: trio.abc.Clock) -> None:
    policy = RetryPolicy(Backoff(initial=1, jitter=0), max_attempts=3)
    calls = 0

    async def refused_twice() -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionRefusedError("not yet")
        return "up"

    assert await policy.call(refused_twice, retry_on=(ConnectionRefusedError,)) == "up"
    assert calls == 3

    async def broken() -> None:
        raise ValueError("not a connection problem")

    with pytest.raises(ValueError, match="not a connection problem"):
        await policy.call(broken, retry_on=(OSError,))

    async def always_refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("never")

    calls = 0
    with pytest.raises(ConnectionRefusedError):
        await policy.call(always_refused)
    assert calls == 4  # the first attempt and three retries


async def test_breaker_opens_refuses_then_lets_one_trial_through(
    autojump_clock: trio.abc.Clock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=30)
    assert breaker.state == "closed"
    breaker.check()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and breaker.opened == 1
    with pytest.raises(CircuitOpenError) as info:
        breaker.check()
    assert isinstance(info.value, ConnectionFailure) and 0 < info.value.retry_after <= 30
    await trio.sleep(30)
    assert breaker.state == "half_open"
    breaker.check()  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.check()  # nobody else during the trial
    breaker.record_failure()  # the trial failed: open again
    assert breaker.state == "open" and breaker.opened == 2
    await trio.sleep(30)
    breaker.check()
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.check()


async def test_a_shared_breaker_makes_other_policies_fail_fast(
    autojump_clock: trio.abc.Clock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=3, recovery_time=60)
    first = RetryPolicy(Backoff(initial=0.1, jitter=0), max_attempts=5, breaker=breaker)
    second = RetryPolicy(Backoff(initial=0.1, jitter=0), max_attempts=5, breaker=breaker)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("down")

    with pytest.raises(CircuitOpenError):
        await first.call(down)
    assert calls == 3  # the breaker opened after the third failure and refused the fourth
    with pytest.raises(CircuitOpenError):
        await second.call(down)
    assert calls == 3  # refused without trying
