"""Small helpers shared by every component."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar

import trio

__all__ = [
    "EnterOnce",
    "OneShot",
    "collapse_single_error",
    "fix_public_modules",
    "open_hidden_nursery",
    "reraise_single",
    "single_exception",
]

T = TypeVar("T")


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


def fix_public_modules(namespace: MutableMapping[str, Any], *nested: type) -> None:
    """Make a package's public classes and functions report the package as their module.

    Call it at the end of a package's ``__init__.py`` as ``fix_public_modules(globals())``. Every
    class or function named in the package's ``__all__`` that is defined in one of its private
    submodules (``trionet.bus._socket.BusSocket``) gets ``__module__`` set to the package
    (``trionet.bus``), so that reprs, tracebacks, pickling by name and the documentation show
    the name users import. Names re-exported from other public modules (``trionet.errors``)
    and values that are not classes or functions (constants, type aliases) are left alone.
    *nested* are further classes to treat the same way (public classes reached as attributes
    of a public class, such as ``Filters.Fields``).
    """
    package: str = namespace["__name__"]
    private = package + "._"
    objects = [namespace[name] for name in namespace["__all__"]]
    for obj in [*objects, *nested]:
        if not (isinstance(obj, type) or inspect.isfunction(obj)):
            continue
        if obj.__module__.startswith(private):
            obj.__module__ = package


class OneShot(Generic[T]):
    """A value or an error, delivered once by one side and awaited by the other.

    The waiting side creates it, hands it over (usually in a dict keyed by a request id) and
    awaits :meth:`wait`; the delivering side calls :meth:`set` or :meth:`fail`. The first
    delivery wins; later ones are refused (the methods return False), which lets the delivering
    side count late or duplicate answers. Delivering never blocks and needs no checkpoint, so it
    can be done from any trio task or synchronous callback in the trio thread.

    Example::

        waiter: OneShot[bytes] = OneShot()
        pending[request_id] = waiter
        try:
            reply = await waiter.wait()
        finally:
            del pending[request_id]
    """

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether a value or an error has been delivered."""
        return self._event.is_set()

    def set(self, value: T) -> bool:
        """Deliver *value*; False (and *value* dropped) if something was delivered before."""
        return self._deliver(value, None)

    def fail(self, error: BaseException) -> bool:
        """Deliver *error* (:meth:`wait` raises it); False if something was delivered before."""
        return self._deliver(None, error)

    def _deliver(self, value: T | None, error: BaseException | None) -> bool:
        if self._event.is_set():
            return False
        self._value, self._error = value, error
        self._event.set()
        return True

    def result(self) -> T:
        """The delivered value, or raise the delivered error.

        Raises:
            RuntimeError: nothing was delivered yet.
        """
        if not self._event.is_set():
            raise RuntimeError("OneShot.result() called before a value or an error was delivered")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set() stored a T

    async def wait(self) -> T:
        """Wait until a value or an error is delivered; return the value or raise the error.

        A checkpoint even when the delivery came first (as :meth:`trio.Event.wait`).
        """
        await self._event.wait()
        return self.result()


class EnterOnce:
    """Base class of an async context manager whose lifetime is one ``_lifetime()`` context.

    A subclass writes its whole life (start, ``yield self``, clean-up) as one
    ``@asynccontextmanager`` method ``_lifetime``; ``async with obj`` enters it, and entering the
    same object a second time raises :exc:`RuntimeError`, or the subclass's
    ``_entered_twice`` class (an object's threads, sockets and nursery are set up for one life
    only)::

        class Client(EnterOnce):
            @asynccontextmanager
            async def _lifetime(self) -> AsyncIterator[Self]:
                async with open_hidden_nursery() as nursery:
                    ...
                    yield self
    """

    _lifetime_cm: AbstractAsyncContextManager[Any] | None = None
    #: What entering the object a second time raises (with the message below).
    _entered_twice: type[Exception] = RuntimeError
    #: The message of that error (None: "a X can be entered only once");
    #: for a class whose earlier message is part of its behaviour.
    _entered_twice_message: str | None = None

    def _lifetime(self) -> AbstractAsyncContextManager[Any]:
        """The object's life; ``yield`` (or return from ``__aenter__``) the object itself."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._lifetime_cm is not None:
            raise self._entered_twice(self._entered_twice_message
                                      or f"a {type(self).__name__} can be entered only once")
        cm = self._lifetime_cm = self._lifetime()
        entered: Self = await cm.__aenter__()
        return entered

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        cm = self._lifetime_cm
        if cm is None:
            raise RuntimeError(f"this {type(self).__name__} was not entered")
        return await cm.__aexit__(exc_type, exc, tb)
