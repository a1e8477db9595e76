"""open_hidden_nursery: a lone error comes out as itself, with its own context; several stay
grouped."""

from __future__ import annotations

import pytest
import trio

from trionet._util import open_hidden_nursery


async def test_an_error_of_the_body_comes_out_as_itself_without_the_group_as_context() -> None:
    with pytest.raises(KeyError) as raised:
        async with open_hidden_nursery():
            raise KeyError("body")
    assert raised.value.__context__ is None
    assert raised.value.__cause__ is None


async def test_an_error_of_a_background_task_keeps_its_cause_and_context() -> None:
    async def fail() -> None:
        try:
            raise OSError("underneath")
        except OSError as exc:
            try:
                raise LookupError("while handling")
            except LookupError:
                raise ValueError("task") from exc

    with pytest.raises(ValueError, match="task") as raised:
        async with open_hidden_nursery() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()
    assert isinstance(raised.value.__cause__, OSError)
    assert isinstance(raised.value.__context__, LookupError)


async def test_several_errors_stay_grouped() -> None:
    async def fail(n: int) -> None:
        raise ValueError(n)

    with pytest.raises(ExceptionGroup) as raised:
        async with open_hidden_nursery() as nursery:
            nursery.start_soon(fail, 1)
            nursery.start_soon(fail, 2)
            await trio.sleep_forever()
    assert sorted(exc.args[0] for exc in raised.value.exceptions) == [1, 2]


async def test_cancellation_passes_through() -> None:
    with trio.move_on_after(0.01) as scope:
        async with open_hidden_nursery():
            await trio.sleep_forever()
    assert scope.cancelled_caught
