"""Background tasks attached to a response: run after its body has been sent.

A :class:`BackgroundTask` runs in the request's own task once the last byte of the response has
been handed to the server, so the client has its answer before the work starts, and context
variables, the request's middleware (a timeout, the request id) and the application's lifespan
still apply. An exception it raises is logged to the ``trionet.asgi`` logger; it cannot become
an error response any more, and it does not reach the server.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .._threads import run_blocking

__all__ = ["BackgroundTask", "BackgroundTasks", "run_background"]

logger = logging.getLogger("trionet.asgi")


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class BackgroundTask:
    """``fn(*args, **kwargs)``, run after the response it is attached to has been sent.

    ``fn`` may be a coroutine function (awaited in the request's task) or a plain function
    (run on a worker thread, so that blocking work, such as sending an email with
    :mod:`smtplib`, does not stop the event loop)::

        async def record_signup(email: str) -> None:
            ...

        @router.post("/signup")
        async def signup(request: Request) -> Response:
            data = await request.json()
            return Response.json({"ok": True}, background=BackgroundTask(record_signup,
                                                                         data["email"]))

    Args:
        fn: the function to call.
        *args: its positional arguments.
        **kwargs: its keyword arguments.
    """

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    async def __call__(self) -> None:
        """Run the task (errors propagate; the response logs them, see :func:`run_background`)."""
        if _is_async(self.fn):
            await self.fn(*self.args, **self.kwargs)
        else:
            await run_blocking(functools.partial(self.fn, *self.args, **self.kwargs))

    def __repr__(self) -> str:
        return f"BackgroundTask({getattr(self.fn, '__qualname__', self.fn)!r})"


class BackgroundTasks(BackgroundTask):
    """Several background tasks, run one after the other in the order they were added.

    A task that raises is logged and the next one still runs.

    Args:
        tasks: initial tasks.
    """

    __slots__ = ("tasks",)

    def __init__(self, tasks: Iterable[BackgroundTask] = ()) -> None:
        super().__init__(self._run_all)
        self.tasks: list[BackgroundTask] = list(tasks)

    def add_task(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Append ``fn(*args, **kwargs)``."""
        self.tasks.append(BackgroundTask(fn, *args, **kwargs))

    async def _run_all(self) -> None:
        for task in self.tasks:
            await run_background(task)

    def __repr__(self) -> str:
        return f"BackgroundTasks({self.tasks!r})"


async def run_background(task: BackgroundTask) -> None:
    """Run ``task``; an exception it raises is logged (``trionet.asgi``), not raised.

    Cancellation is not caught: a task that the server or a timeout cancels stops.
    """
    try:
        await task()
    except Exception:
        logger.exception("background task %r failed", task)
