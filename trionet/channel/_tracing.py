"""Tracing of Channel requests (see :mod:`trionet.tracing`): a ``CLIENT`` span per
:meth:`Channel.send`, a ``SERVER`` span per request :meth:`Channel.serve` answers.

No trace context travels with a request: aiomas' frame, ``[type, id, content]``, has no slot
for one, and a fourth element would break every aiomas peer (they unpack three). So the
client's and the server's spans are two traces, tied together by nothing but time and the
peer addresses. Every function here runs only while tracing is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import tracing as _tracing

__all__ = ["client_span", "describer"]

#: ``rpc.system``: the wire is aiomas' (not one of the semantic conventions' well-known values).
SYSTEM = "aiomas"
#: A request's method (the path of an RPC call) longer than this is cut.
MAX_METHOD = 128


def _method(content: Any) -> str | None:
    """The RPC path of a request shaped like an aiomas RPC call (``[path, args, kwargs]``)."""
    if type(content) is list and len(content) == 3 and type(content[0]) is str:
        return content[0][:MAX_METHOD]
    return None


def _peer(peername: Any, prefix: str) -> dict[str, _tracing.AttributeValue]:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return {f"{prefix}.address": str(peername[0]), f"{prefix}.port": int(peername[1]),
                "network.transport": "tcp"}
    if isinstance(peername, str) and peername:
        return {f"{prefix}.address": peername, "network.transport": "unix"}
    return {}


def _describe(content: Any, peer: dict[str, _tracing.AttributeValue]
              ) -> tuple[str, dict[str, _tracing.AttributeValue]]:
    attributes: dict[str, _tracing.AttributeValue] = {"rpc.system": SYSTEM, **peer}
    method = _method(content)
    if method is None:
        return "aiomas request", attributes
    attributes["rpc.method"] = method
    return method, attributes


def client_span(content: Any, peername: Any) -> _tracing.Span | None:
    """The ``CLIENT`` span of one request (not made current: nothing runs inside it)."""
    name, attributes = _describe(content, _peer(peername, "server"))
    return _tracing.start_span(name, "client", attributes)


def describer(peername: Any) -> Callable[[Any], tuple[str, dict[str, _tracing.AttributeValue]]]:
    """What :func:`trionet.tracing.traced_handler` names a served request by."""
    peer = _peer(peername, "client")

    def describe(content: Any) -> tuple[str, dict[str, _tracing.AttributeValue]]:
        return _describe(content, peer)

    return describe
