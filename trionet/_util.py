"""Small helpers shared by every component."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import NoReturn

import trio

__all__ = ["collapse_single_error", "open_hidden_nursery", "reraise_single", "single_exception"]


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside a (possibly nested) group, or None if there are several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


def reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """In an ``except BaseExceptionGroup`` clause: raise the group's only exception as itself
    (without the group as its displayed context), or the group if it holds several."""
    only = single_exception(group)
    if only is None:
        raise group
    raise only from only.__cause__


@contextmanager
def collapse_single_error() -> Iterator[None]:
    """Re-raise the only exception of an exception group as itself.

    A function that uses a nursery internally should raise what it would raise without one
    (``OSError``, ``HTTPException``, ``trio.Cancelled``...), not an ``ExceptionGroup`` of one,
    or a group of a group of one when nurseries nest. Groups of several exceptions pass through
    unchanged. The exception keeps its own cause and context (the group does not become its
    context, which would print every traceback twice, the group first).
    """
    error: BaseException | None = None
    try:
        yield
    except BaseExceptionGroup as group:
        error = single_exception(group)
        if error is None:
            raise
    if error is not None:
        # Raised here, the error would get the group as its context (the ``with`` statement
        # is still handling it): keep the context it had.
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
            del error, context


@asynccontextmanager
async def open_hidden_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for an async context manager that hides it: a lone error (the body's, or one
    background task's) comes out as itself; several at once stay grouped."""
    with collapse_single_error():
        async with trio.open_nursery() as nursery:
            yield nursery
