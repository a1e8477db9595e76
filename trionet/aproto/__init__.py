"""AsyncAProto: the AsyncAPY packet server and its clients, on trio.

The wire format is the original's protocol v22 (``Content-Length`` of 1 to 8 bytes,
``Protocol-Version`` 22, ``Content-Encoding`` 0 = JSON or 1 = ZiProto, then a map), so trionet
servers and clients talk to AsyncAPY ones. What changed is everything around it: exact framing
(any split, any pipelining), keep-alive connections, idle and session timeouts, peer addresses,
composable filters, secure API keys, TLS on both sides, and no global side effects.

Where the original's names live here:

* ``asyncapy.server.Server`` -> :class:`Server`
* ``asyncapy.client.Client`` -> :class:`Client` (blocking) and :class:`AsyncClient` (trio)
* ``asyncapy.core.Client`` (what handlers get) -> :class:`HandlerClient`
* ``asyncapy.core.Packet``/``Handler``/``Session`` -> :class:`Packet`/:class:`Handler`/
  :class:`Session`
* ``asyncapy.filters.Filter``/``Filters`` -> :class:`Filter`/:class:`Filters`
* ``asyncapy.util.APIKeyFactory`` -> :class:`APIKeyFactory`
* ``asyncapy.errors.StopPropagation`` -> :class:`StopPropagation`
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ._apikeys import (
    APIKeyFactory as APIKeyFactory,
    APIKeyStorage as APIKeyStorage,
    AsyncAPIKeyFactory as AsyncAPIKeyFactory,
    AsyncAPIKeyStorage as AsyncAPIKeyStorage,
    MemoryKeyStorage as MemoryKeyStorage,
    SQLiteKeyStorage as SQLiteKeyStorage,
    ThreadedKeyStorage as ThreadedKeyStorage,
)
from ._client import AsyncClient as AsyncClient
from ._config import read_config as read_config, read_env as read_env
from ._errors import ConnectionClosed as ConnectionClosed, StopPropagation as StopPropagation
from ._filters import AsyncFilter as AsyncFilter, Filter as Filter, Filters as Filters
from ._packet import (
    ERR_HEADER_INVALID as ERR_HEADER_INVALID,
    ERR_REQUEST_MALFORMED as ERR_REQUEST_MALFORMED,
    ERR_SESSION_LIMIT_REACHED as ERR_SESSION_LIMIT_REACHED,
    ERR_TIMED_OUT as ERR_TIMED_OUT,
    PROTOCOL_VERSION as PROTOCOL_VERSION,
    Incoming as Incoming,
    Packet as Packet,
    PacketDecoder as PacketDecoder,
    PacketEncoder as PacketEncoder,
    Rejected as Rejected,
    error_payload as error_payload,
    parse_body as parse_body,
)
from ._server import (
    Handler as Handler,
    HandlerClient as HandlerClient,
    HandlerFunction as HandlerFunction,
    Server as Server,
    ServerStatistics as ServerStatistics,
)
from ._sessions import Session as Session
from ._sync_client import Client as Client
from ._util import run_sync_task as run_sync_task

__all__ = [
    "ERR_HEADER_INVALID",
    "ERR_REQUEST_MALFORMED",
    "ERR_SESSION_LIMIT_REACHED",
    "ERR_TIMED_OUT",
    "PROTOCOL_VERSION",
    "APIKeyFactory",
    "APIKeyStorage",
    "AsyncAPIKeyFactory",
    "AsyncAPIKeyStorage",
    "AsyncClient",
    "AsyncFilter",
    "Client",
    "ConnectionClosed",
    "Filter",
    "Filters",
    "Handler",
    "HandlerClient",
    "HandlerFunction",
    "Incoming",
    "MemoryKeyStorage",
    "Packet",
    "PacketDecoder",
    "PacketEncoder",
    "Rejected",
    "SQLiteKeyStorage",
    "Server",
    "ServerStatistics",
    "Session",
    "StopPropagation",
    "ThreadedKeyStorage",
    "error_payload",
    "parse_body",
    "read_config",
    "read_env",
    "run_sync_task",
]

_fix_public_modules(globals(), Filters.Fields, Filters.Ip, Filters.APIFactory)
