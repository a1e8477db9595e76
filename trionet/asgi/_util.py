"""Small internal helpers shared by the ASGI modules."""

from __future__ import annotations

from .._util import collapse_single_error as collapse_single_error

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
