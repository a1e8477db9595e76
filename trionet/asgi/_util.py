"""Small internal helpers shared by the ASGI modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collapse_single_error", "single_leaf"]


def single_leaf(error: Exception) -> Exception:
    """The only exception inside (nested) one-exception groups, else ``error`` itself.

    A handler that runs a nursery and raises ``HTTPException`` in a child task produces an
    ``ExceptionGroup`` of one; the application should still answer with that status.
    """
    leaf: Exception = error
    while isinstance(leaf, ExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


@contextmanager
def collapse_single_error() -> Iterator[None]:
    """Re-raise the only exception of an exception group coming out of a hidden nursery.

    Callers of a function that uses a nursery internally should see the error they would see
    without it (``HTTPException``, ``OSError``...), not an ``ExceptionGroup`` of one (or a
    group of a group of one, when nurseries are nested). Groups with several exceptions pass
    through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        only: BaseException = group
        while isinstance(only, BaseExceptionGroup) and len(only.exceptions) == 1:
            only = only.exceptions[0]
        if only is group or isinstance(only, BaseExceptionGroup):
            raise
        raise only from only.__cause__
