"""trionet._util.EnterOnce: one life per object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Self

import pytest

from trionet._util import EnterOnce


class _Resource(EnterOnce):
    def __init__(self) -> None:
        self.events: list[str] = []

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        self.events.append("start")
        try:
            yield self
        finally:
            self.events.append("stop")


async def test_enter_once_runs_the_lifetime_and_refuses_a_second_entry() -> None:
    resource = _Resource()
    async with resource as entered:
        assert entered is resource
        assert resource.events == ["start"]
    assert resource.events == ["start", "stop"]
    with pytest.raises(RuntimeError, match="a _Resource can be entered only once"):
        async with resource:
            pass  # pragma: no cover
    assert resource.events == ["start", "stop"]


async def test_enter_once_passes_the_body_error_through_the_lifetime() -> None:
    resource = _Resource()
    with pytest.raises(ValueError, match="boom"):
        async with resource:
            raise ValueError("boom")
    assert resource.events == ["start", "stop"]


async def test_exit_without_enter_is_refused() -> None:
    with pytest.raises(RuntimeError, match="was not entered"):
        await _Resource().__aexit__(None, None, None)
