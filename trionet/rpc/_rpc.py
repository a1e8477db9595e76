"""Remote procedure calls over a request-reply :class:`~trionet.channel.Channel` (aiomas rpc).

A call is one channel request whose content is ``[path, args, kwargs]``, exactly as aiomas
sends it: *path* names the function, ``/``-separated through nested services
(``"calc/add"``). The reply is the function's return value; an exception becomes a failure,
raised on the caller's side as :class:`~trionet.errors.RemoteException`.

A service passed as an argument or returned (an object with a ``router``) travels by reference,
as in aiomas: the sending side registers it for the life of the connection under an
unguessable name, and the receiving side gets a :class:`Proxy` that calls it back.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Protocol, TypeVar, cast, overload, runtime_checkable

import trio

from .._util import open_hidden_nursery
from ..channel import (
    Channel,
    open_connection as _open_channel_connection,
    start_server as _start_channel_server,
)
from ..channel._open import DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, Address, CodecSpec
from ..codecs import Codec, SerializerFactory, SerializingCodec, get_codec
from ..errors import ChannelClosed, CodecError
from ..framing import DEFAULT_MAX_FRAME_SIZE
from ..tls import ServerTLSArgument, TLSArgument

logger = logging.getLogger("trionet.rpc")

__all__ = [
    "Proxy",
    "Router",
    "RpcClient",
    "RpcService",
    "Service",
    "ServiceDict",
    "expose",
    "open_connection",
    "serve_rpc",
    "start_server",
]

F = TypeVar("F", bound=Callable[..., Any])

#: How many services one side of a connection may send to the peer by reference.
MAX_REFERENCES = 1000

_EXPOSED = "__rpc__"


def expose(func: F) -> F:
    """Decorator: make *func* callable by the peer. The function is returned unchanged.

    Works on plain functions, methods, ``async def`` functions and methods.

    Raises:
        TypeError: *func* is not callable.
    """
    if not callable(func):
        raise TypeError(f"{func!r} is not callable")
    setattr(func, _EXPOSED, True)
    return func


def _is_exposed(obj: object) -> bool:
    return callable(obj) and getattr(obj, _EXPOSED, False) is True


@runtime_checkable
class RpcService(Protocol):
    """Anything with a :class:`Router` in its ``router`` attribute can be served."""

    @property
    def router(self) -> Router: ...


class Router:
    """Resolves call paths such as ``"calc/add"`` to exposed functions of an object.

    Each service object has one router (made for it by :class:`Service` or
    :class:`ServiceDict`). Sub-services are attached by name with :meth:`add`; a path walks
    them and ends at an exposed function.

    Args:
        obj: the service object (or dict, for :class:`ServiceDict`).
        lookup: how a name is looked up on *obj*; attribute access by default.
    """

    __slots__ = ("_cache", "_children", "_lookup", "name", "obj", "parent")

    def __init__(self, obj: Any, lookup: Callable[[str], Any] | None = None) -> None:
        self.obj = obj
        self._lookup: Callable[[str], Any] = lookup or partial(getattr, obj)
        self._children: dict[str, Router] = {}
        self._cache: dict[str, Callable[..., Any]] = {}
        #: The name under which the parent router knows this one ("" for a root).
        self.name = ""
        #: The parent router, or ``None`` for a root.
        self.parent: Router | None = None

    def __repr__(self) -> str:
        return f"<Router {self.path or '/'} of {type(self.obj).__name__}>"

    @property
    def path(self) -> str:
        """This router's path from the root (``""`` for the root itself)."""
        parts: list[str] = []
        router: Router | None = self
        while router is not None and router.parent is not None:
            parts.append(router.name)
            router = router.parent
        return "/".join(reversed(parts))

    def add(self, name: str, service: RpcService | None = None) -> None:
        """Attach a sub-service under *name*: ``self.obj.<name>`` unless *service* is given.

        Raises:
            ValueError: the name contains ``/``, is taken, or the service already has a parent.
            TypeError: the object is not a service (it has no ``router``).
        """
        if not name or "/" in name:
            raise ValueError(f"invalid sub-service name {name!r}")
        if name in self._children:
            raise ValueError(f"a sub-service named {name!r} is already attached")
        target = self._lookup(name) if service is None else service
        router = getattr(target, "router", None)
        if not isinstance(router, Router):
            raise TypeError(f"{target!r} is not an RPC service (it has no Router 'router')")
        if router.parent is not None:
            raise ValueError(f"{target!r} is already a sub-service of {router.parent.obj!r}")
        router.name = name
        router.parent = self
        self._children[name] = router
        self._cache.clear()

    def resolve(self, path: str) -> Callable[..., Any]:
        """Return the exposed function at *path*.

        Raises:
            LookupError: nothing is exposed at *path* (the message says which part failed).
        """
        func = self._cache.get(path)
        if func is not None:
            return func
        if not isinstance(path, str) or not path:
            raise LookupError(f"invalid RPC path {path!r}")
        *services, name = path.split("/")
        router = self
        for index, part in enumerate(services):
            child = router._children.get(part)
            if child is None:
                where = "/".join(services[:index]) or "/"
                raise LookupError(f"no service {part!r} in {where!r}")
            router = child
        try:
            found: Any = router._lookup(name)
        except (AttributeError, KeyError):
            found = None
        if found is None or name.startswith("_") or not _is_exposed(found):
            where = "/".join(services) or "/"
            raise LookupError(f"no exposed function {name!r} in {where!r}")
        self._cache[path] = found
        return cast(Callable[..., Any], found)


class Service:
    """Descriptor giving each instance of a class its own :class:`Router`::

        class Calculator:
            router = Service()

            @expose
            def add(self, a, b):
                return a + b

        class Root:
            router = Service(["calc"])  # attributes holding sub-services

            def __init__(self):
                self.calc = Calculator()

    Args:
        sub_services: names of instance attributes holding sub-services; they are attached
            the first time the router is used.
    """

    def __init__(self, sub_services: Iterable[str] = ()) -> None:
        self._sub_services = tuple(sub_services)
        self._attr = "router"

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = name

    @overload
    def __get__(self, instance: None, owner: type) -> Service: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Router: ...
    def __get__(self, instance: object | None, owner: type) -> Service | Router:
        if instance is None:
            return self
        key = f"_{self._attr}_router"
        router: Router | None = instance.__dict__.get(key)
        if router is None:
            router = Router(instance)
            instance.__dict__[key] = router
            for name in self._sub_services:
                router.add(name)
        return router

    def __set__(self, instance: object, value: object) -> None:
        raise AttributeError("the router of a service cannot be replaced")

    #: Alias of :func:`expose`, so that ``@Service.expose`` reads as in aiomas.
    expose = staticmethod(expose)


class ServiceDict:
    """A service made of a dict: its values are exposed functions or sub-services.

    ::

        service = ServiceDict({"add": expose(lambda a, b: a + b), "calc": Calculator()})
    """

    def __init__(self, entries: dict[str, Any] | None = None) -> None:
        self.entries: dict[str, Any] = dict(entries or {})
        self.router = Router(self, self.entries.__getitem__)
        for name, value in self.entries.items():
            if isinstance(getattr(value, "router", None), Router):
                self.router.add(name, value)


class Proxy:
    """A remote function or service: attribute access goes deeper, calling sends the request.

    ``await client.remote.calc.add(1, 2)`` sends ``["calc/add", [1, 2], {}]`` and returns the
    reply. Cancel the call with a trio deadline as usual; the channel stays usable.
    """

    __slots__ = ("_channel", "_children", "_path")

    def __init__(self, channel: Channel, path: str = "") -> None:
        self._channel = channel
        self._path = path
        self._children: dict[str, Proxy] = {}

    def __repr__(self) -> str:
        return f"<Proxy {self._path or '/'} on {self._channel.origin}>"

    def __getattr__(self, name: str) -> Proxy:
        if name.startswith("__"):
            raise AttributeError(name)
        proxy = self._children.get(name)
        if proxy is None:
            path = f"{self._path}/{name}" if self._path else name
            proxy = self._children[name] = Proxy(self._channel, path)
        return proxy

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the remote function; return its result.

        Raises:
            RemoteException: the remote function raised (or the path does not exist there).
            ChannelClosed: the connection is gone.
            AttributeError: this proxy is the root (no function named).
        """
        if not self._path:
            raise AttributeError("name a remote function: client.remote.<name>(...)")
        return await self._channel.send([self._path, list(args), kwargs])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Proxy):
            return NotImplemented
        return self._channel is other._channel and self._path == other._path

    def __hash__(self) -> int:
        return hash((id(self._channel), self._path))


class RpcClient:
    """Calls the peer's service through :attr:`remote`.

    Args:
        channel: the channel to the peer.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._remote = Proxy(channel)
        self._reset_callback: Callable[[BaseException], object] | None = None

    def on_connection_reset(self, callback: Callable[[BaseException], object] | None) -> None:
        """Call ``callback(exc)`` when the peer closes or breaks the connection while this side
        serves it (aiomas's hook; one callback, a new one replaces it, ``None`` removes it).

        *exc* is a :exc:`~trionet.errors.ChannelClosed` (also a :exc:`ConnectionResetError`)
        whose message says whether the peer closed cleanly or the connection broke. It is not
        called when this side ends the connection (the ``async with`` block exits or the
        server is cancelled). The callback runs in the serving task; it must not block.

        Raises:
            ValueError: *callback* is neither callable nor ``None``.
        """
        if callback is not None and not callable(callback):
            raise ValueError(f"the connection reset callback must be callable, not {callback!r}")
        self._reset_callback = callback

    def _connection_reset(self, exc: BaseException) -> None:
        callback = self._reset_callback
        if callback is None:
            return
        try:
            callback(exc)
        except Exception:
            logger.exception("the RPC connection reset callback raised")

    @property
    def channel(self) -> Channel:
        """The underlying :class:`~trionet.channel.Channel`."""
        return self._channel

    @property
    def remote(self) -> Proxy:
        """The root proxy: ``await client.remote.name(...)``, ``client.remote.sub.name(...)``."""
        return self._remote

    async def call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        """Call the remote function at *path* (``"calc/add"``); same as going through
        :attr:`remote`."""
        return await self._channel.send([path, list(args), kwargs])


def _router_of(service: RpcService) -> Router:
    router = getattr(service, "router", None)
    if not isinstance(router, Router):
        raise TypeError(f"{service!r} is not an RPC service (it has no Router 'router')")
    return router


class _References:
    """One connection's services sent by reference: name -> router, and the way back."""

    __slots__ = ("by_name", "by_router", "channel", "codec", "serving")

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.by_name: dict[str, Router] = {}
        self.by_router: dict[Router, str] = {}
        #: Set once the channel exists; proxies for the peer's services call through it.
        self.channel: Channel | None = None
        #: Whether this side answers calls on the connection (it can only then send services).
        self.serving = False

    def serialize(self, obj: object) -> str:
        router = getattr(obj, "router", None)
        if not isinstance(router, Router):
            raise CodecError(f"cannot encode an object of type {type(obj).__qualname__}; "
                             "register it with add_serializer()", codec=self.codec, fault="local")
        if not self.serving:
            raise CodecError(f"cannot send the service {obj!r} by reference: this side serves "
                             "no RPC on the connection (open_connection(rpc_service=...))",
                             codec=self.codec, fault="local")
        name = self.by_router.get(router)
        if name is None:
            if len(self.by_name) >= MAX_REFERENCES:
                raise CodecError(f"more than {MAX_REFERENCES} services sent by reference on "
                                 "one connection", codec=self.codec, fault="local")
            name = "~" + secrets.token_hex(16)  # "~": never an attribute or sub-service name
            self.by_name[name] = router
            self.by_router[router] = name
        return name

    def deserialize(self, name: object) -> Proxy:
        if not isinstance(name, str) or not name.startswith("~") or self.channel is None:
            raise CodecError(f"invalid service reference {name!r}", codec=self.codec)
        return Proxy(self.channel, name)


# Codec -> the references of the one connection that codec encodes for.
_REFERENCES: weakref.WeakKeyDictionary[Codec, _References] = weakref.WeakKeyDictionary()


def _references_codec(codec: CodecSpec, extra_serializers: Iterable[SerializerFactory]
                      ) -> tuple[CodecSpec, Iterable[SerializerFactory]]:
    """A codec factory making one codec per connection that carries services by reference.

    A codec object (shared by the connections) is left alone: no references through it.
    """
    if not isinstance(codec, (str, type)) and (isinstance(codec, Codec) or not callable(codec)):
        return codec, extra_serializers
    extras = tuple(extra_serializers)
    spec = codec

    def make() -> Codec:
        made = get_codec(spec) if isinstance(spec, (str, type)) else spec()
        if not isinstance(made, SerializingCodec):
            if extras:
                raise TypeError(f"extra_serializers need a codec with add_serializer(), not "
                                f"{made!r}")
            return made
        for factory in extras:
            made.add_serializer(*factory())
        if object not in made._by_type:
            refs = _References(made.name)
            made.add_serializer(object, refs.serialize, refs.deserialize)
            _REFERENCES[made] = refs
        return made

    if isinstance(spec, str):
        get_codec(spec)  # an unknown name fails here, not at the first connection
    return make, ()


def _bind_references(channel: Channel, *, serving: bool) -> _References | None:
    refs = _REFERENCES.get(channel.codec)
    if refs is not None:
        refs.channel = channel
        refs.serving = serving
    return refs


def _dispatcher(router: Router, refs: _References | None = None) -> Callable[[Any], Any]:
    by_name = refs.by_name if refs is not None else {}

    def dispatch(content: Any) -> Any:
        if not isinstance(content, (list, tuple)) or len(content) != 3:
            raise TypeError("an RPC request must be [path, args, kwargs]")
        path, args, kwargs = content
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise TypeError("an RPC request must be [path, args, kwargs]")
        if by_name and isinstance(path, str) and path.startswith("~"):
            name, _, rest = path.partition("/")
            target = by_name.get(name)
            if target is None:
                raise LookupError("no such service reference (it lives as long as its connection)")
            return target.resolve(rest)(*args, **kwargs)
        return router.resolve(path)(*args, **kwargs)

    return dispatch


async def serve_rpc(channel: Channel, service: RpcService, *, max_concurrency: int = 64) -> None:
    """Answer the peer's calls on *channel* with *service* until the peer closes.

    Plain functions run inline; ``async def`` functions run in their own tasks, at most
    *max_concurrency* at a time. See :meth:`Channel.serve <trionet.channel.Channel.serve>`.

    Raises:
        TypeError: *service* has no router.
        ChannelClosed: the connection broke.
    """
    await channel.serve(_dispatcher(_router_of(service)), max_concurrency=max_concurrency)


@asynccontextmanager
async def open_connection(
    addr: Address,
    *,
    rpc_service: RpcService | None = None,
    codec: CodecSpec = "json",
    tls: TLSArgument = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_concurrency: int = 64,
    **kwds: Any,
) -> AsyncIterator[RpcClient]:
    """Connect to an RPC server; yield an :class:`RpcClient`.

    ::

        async with trionet.rpc.open_connection(("127.0.0.1", port)) as client:
            three = await client.remote.calc.add(1, 2)

    Args:
        addr: ``(host, port)`` or a Unix socket path.
        rpc_service: serve this service to the peer too (calls in both directions), in a
            task that ends with the block.
        codec, tls, ssl_context, server_hostname, max_frame_size, kwds: as for
            :func:`trionet.channel.open_connection` (``timeout=`` and ``retry=`` for
            retry-connect, ``extra_serializers=`` among *kwds*).
        max_concurrency: limit of concurrent ``async`` calls served to the peer.
    """
    router = _router_of(rpc_service) if rpc_service is not None else None
    codec, kwds["extra_serializers"] = _references_codec(codec, kwds.get("extra_serializers", ()))
    async with _open_channel_connection(
        addr,
        codec=codec,
        tls=tls,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        max_frame_size=max_frame_size,
        **kwds,
    ) as channel:
        client = RpcClient(channel)
        refs = _bind_references(channel, serving=router is not None)
        if router is None:
            yield client
            return
        async with open_hidden_nursery() as nursery:
            nursery.start_soon(_serve_quietly, channel, _dispatcher(router, refs),
                               max_concurrency, client)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()


async def _serve_quietly(channel: Channel, dispatch: Callable[[Any], Any], limit: int,
                         client: RpcClient) -> None:
    # A lost connection is reported by the caller's own calls, and to the reset callback.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await _serve_reporting_reset(channel, dispatch, limit, client)


async def _serve_reporting_reset(channel: Channel, dispatch: Callable[[Any], Any], limit: int,
                                 client: RpcClient) -> None:
    """``channel.serve``, telling *client*'s reset callback when the peer ended it."""
    try:
        await channel.serve(dispatch, max_concurrency=limit)
    except ChannelClosed as exc:
        client._connection_reset(exc)
        raise
    client._connection_reset(ChannelClosed("the peer closed the connection"))


async def start_server(
    addr: Address,
    rpc_service: RpcService,
    client_connected_cb: Callable[[RpcClient], Awaitable[object]] | None = None,
    *,
    codec: CodecSpec = "json",
    tls: ServerTLSArgument = None,
    ssl_context: ssl.SSLContext | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_concurrency: int = 64,
    backlog: int | None = None,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    extra_serializers: Iterable[SerializerFactory] = (),
    task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *rpc_service* to every client until cancelled; start it with ``nursery.start``.

    ::

        addresses = await nursery.start(trionet.rpc.start_server, ("127.0.0.1", 0), Root())

    Args:
        addr: ``(host, port)`` or a Unix socket path.
        rpc_service: the service (an object with a :class:`Router` ``router``).
        client_connected_cb: optional ``async def cb(client)`` run alongside serving each
            connection, with an :class:`RpcClient` to call the peer back; it is cancelled
            when the peer disconnects.
        codec, tls, ssl_context, max_frame_size, backlog, frame_timeout, idle_timeout, \
            extra_serializers, task_status: as for :func:`trionet.channel.start_server`.
        max_concurrency: limit of concurrent ``async`` calls per connection.

    Raises:
        TypeError: *rpc_service* has no router.
    """
    router = _router_of(rpc_service)
    codec, extra_serializers = _references_codec(codec, extra_serializers)

    async def on_connection(channel: Channel) -> None:
        dispatch = _dispatcher(router, _bind_references(channel, serving=True))
        if client_connected_cb is None:
            await channel.serve(dispatch, max_concurrency=max_concurrency)
            return
        client = RpcClient(channel)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_connected_cb, client)
            await _serve_reporting_reset(channel, dispatch, max_concurrency, client)
            nursery.cancel_scope.cancel()

    await _start_channel_server(
        addr,
        on_connection,
        codec=codec,
        tls=tls,
        ssl_context=ssl_context,
        max_frame_size=max_frame_size,
        backlog=backlog,
        frame_timeout=frame_timeout,
        idle_timeout=idle_timeout,
        extra_serializers=extra_serializers,
        task_status=task_status,
    )

