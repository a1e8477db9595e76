"""Remote procedure calls over request-reply channels, wire-compatible with aiomas 2.x rpc.

Expose functions with :func:`expose` on a service (a class with ``router = Service()``, or a
:class:`ServiceDict`), serve it with :func:`start_server`, and call it through the proxies of an
:class:`RpcClient`::

    class Calculator:
        router = Service()

        @expose
        def add(self, a, b):
            return a + b

    addresses = await nursery.start(start_server, ("127.0.0.1", 0), Calculator())
    async with open_connection(addresses[0]) as client:
        assert await client.remote.add(1, 2) == 3

A remote exception is raised as :class:`~trionet.errors.RemoteException`. A service passed as
an argument or returned reaches the peer as a :class:`Proxy` calling it back.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ..errors import RemoteException as RemoteException
from ._rpc import (
    MAX_REFERENCES as MAX_REFERENCES,
    Proxy as Proxy,
    Router as Router,
    RpcClient as RpcClient,
    RpcService as RpcService,
    Service as Service,
    ServiceDict as ServiceDict,
    expose as expose,
    open_connection as open_connection,
    serve_rpc as serve_rpc,
    start_server as start_server,
)

__all__ = [
    "MAX_REFERENCES",
    "Proxy",
    "RemoteException",
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

_fix_public_modules(globals())
