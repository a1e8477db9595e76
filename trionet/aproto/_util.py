"""Running blocking functions from handlers."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import trio

from .._threads import run_abandoning, run_blocking

__all__ = ["run_sync_task"]

T = TypeVar("T")


async def run_sync_task(
    sync_fn: Callable[..., T],
    *args: object,
    abandon_on_cancel: bool = False,
    limiter: trio.CapacityLimiter | None = None,
    cancellable: bool | None = None,
) -> T:
    """Run a blocking function in a worker thread and return its result.

    The original's helper, on trio's thread support. With ``abandon_on_cancel=False`` (the
    default) the call goes through trionet's thread bridge: a cancelled caller waits for the
    thread to finish, so no thread outlives the handler (give blocking calls their own
    timeouts). ``abandon_on_cancel=True`` is the explicit opt-out: the caller returns at once on
    cancellation and the thread keeps running unobserved, its result discarded.

    Args:
        sync_fn: the function; called as ``sync_fn(*args)``.
        *args: its positional arguments.
        abandon_on_cancel: see above.
        limiter: a :class:`trio.CapacityLimiter` bounding concurrent threads (default: trio's
            global limiter, 40 threads).
        cancellable: the original's name for *abandon_on_cancel*; deprecated (it warns).

    Returns:
        Whatever *sync_fn* returns; its exception propagates.
    """
    if cancellable is not None:
        warnings.warn(
            "run_sync_task(cancellable=...) is deprecated; use abandon_on_cancel=...",
            DeprecationWarning,
            stacklevel=2,
        )
        abandon_on_cancel = cancellable
    if abandon_on_cancel:
        return await run_abandoning(sync_fn, *args, limiter=limiter)
    return await run_blocking(sync_fn, *args, limiter=limiter)
