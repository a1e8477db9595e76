"""Bus restarts under the shared RetryPolicy (and RestartPolicy as its spelling)."""

from __future__ import annotations

import pytest
import trio
from bus_support import PATIENCE, unique

from trionet.bus import BusSocket, DistributedApplication, RestartPolicy
from trionet.errors import ConfigurationError
from trionet.supervision import Backoff, CircuitBreaker, RetryPolicy

FAST = Backoff(initial=0.01, maximum=0.01, jitter=0)


def test_restart_policy_is_a_retry_policy() -> None:
    policy = RestartPolicy(max_restarts=4, backoff=FAST, reset_after=9)
    assert policy.retry == RetryPolicy(FAST, max_attempts=4, reset_after=9)


async def test_a_retry_policy_restarts_then_gives_up() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    starts = 0

    @app.producer(restart=RetryPolicy(FAST, max_attempts=2), on_error="raise")
    async def producer(socket: BusSocket) -> None:
        nonlocal starts
        starts += 1
        raise RuntimeError(f"start {starts}")

    with pytest.raises(RuntimeError, match="start 3"), trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert app.statistics["producer"].restarts == 2


async def test_a_shared_breaker_stops_restarts_early() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=60)
    starts = 0

    @app.producer(restart=RetryPolicy(FAST, max_attempts=10, breaker=breaker), on_error="raise")
    async def producer(socket: BusSocket) -> None:
        nonlocal starts
        starts += 1
        raise RuntimeError(f"start {starts}")

    with pytest.raises(RuntimeError, match="start 2"), trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert breaker.state == "open"  # two failures opened it; no third start


def test_restart_must_be_a_policy() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        @app.producer(restart=3)  # type: ignore[arg-type]
        async def producer(socket: BusSocket) -> None:
            pass  # pragma: no cover
