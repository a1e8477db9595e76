"""The ground-floor helpers of trionet/_util.py: OneShot, fix_public_modules, EnterOnce's
_entered_twice."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trionet._util import EnterOnce, OneShot, fix_public_modules


async def test_one_shot_hands_a_value_to_the_waiting_task() -> None:
    waiter: OneShot[int] = OneShot()
    got: list[int] = []

    async def wait() -> None:
        got.append(await waiter.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not waiter.done
        assert waiter.set(7)
    assert got == [7]
    assert waiter.done
    assert waiter.result() == 7


async def test_one_shot_raises_the_delivered_error() -> None:
    waiter: OneShot[int] = OneShot()
    error = ValueError("no")
    assert waiter.fail(error)
    with pytest.raises(ValueError, match="no") as info:
        await waiter.wait()
    assert info.value is error


async def test_one_shot_first_delivery_wins() -> None:
    waiter: OneShot[str] = OneShot()
    assert waiter.set("first")
    assert not waiter.set("second")
    assert not waiter.fail(RuntimeError("late"))
    assert await waiter.wait() == "first"


async def test_one_shot_wait_is_a_checkpoint_even_when_delivered() -> None:
    waiter: OneShot[int] = OneShot()
    waiter.set(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await waiter.wait()
        pytest.fail("wait() did not checkpoint")  # pragma: no cover
    assert scope.cancelled_caught


def test_one_shot_result_before_delivery_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before"):
        OneShot[int]().result()


def test_fix_public_modules_reports_the_package() -> None:
    private = types.ModuleType("pkg._impl")
    exec(  # a class and a function defined in a private submodule
        "class Thing:\n    class Inner: pass\ndef make(): pass\nCONSTANT = 3\n",
        private.__dict__,
    )
    other = types.ModuleType("elsewhere")
    exec("class Foreign: pass\n", other.__dict__)
    namespace = {
        "__name__": "pkg",
        "__all__": ["Thing", "make", "CONSTANT", "Foreign"],
        "Thing": private.Thing,
        "make": private.make,
        "CONSTANT": private.CONSTANT,
        "Foreign": other.Foreign,
    }
    fix_public_modules(namespace, private.Thing.Inner)
    assert private.Thing.__module__ == "pkg"
    assert private.make.__module__ == "pkg"
    assert private.Thing.Inner.__module__ == "pkg"
    assert other.Foreign.__module__ == "elsewhere"  # not from this package: left alone


async def test_enter_once_raises_the_class_of_the_subclass_when_entered_twice() -> None:
    class Closed(Exception):
        pass

    class Resource(EnterOnce):
        _entered_twice = Closed

        @asynccontextmanager
        async def _lifetime(self) -> AsyncIterator[Resource]:
            yield self

    resource = Resource()
    async with resource as entered:
        assert entered is resource
        with pytest.raises(Closed, match="a Resource can be entered only once"):
            await resource.__aenter__()
