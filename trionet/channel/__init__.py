"""Request-reply channels, wire-compatible with aiomas 2.x, on trio.

A :class:`Channel` carries requests and replies over one connection, in both directions:
``await channel.send(content)`` returns the peer's reply (or raises
:class:`~trionet.errors.RemoteException`), and the peer answers with
``request = await channel.recv()`` then ``await request.reply(value)``.
:func:`open_connection` and :func:`start_server` open TCP or Unix socket connections, with TLS if
given an :class:`ssl.SSLContext`. The sans-I/O protocol core is :class:`ChannelProtocol`.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ..errors import (
    ChannelClosed as ChannelClosed,
    ChannelError as ChannelError,
    RemoteException as RemoteException,
)
from ._channel import Channel as Channel, ChannelStatistics as ChannelStatistics, Request as Request
from ._open import (
    DEFAULT_FRAME_TIMEOUT as DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT,
    Address as Address,
    CodecSpec as CodecSpec,
    open_channel as open_channel,
    open_connection as open_connection,
    start_server as start_server,
)
from ._protocol import (
    EXCEPTION as EXCEPTION,
    REQUEST as REQUEST,
    RESULT as RESULT,
    ChannelProtocol as ChannelProtocol,
    ExceptionReceived as ExceptionReceived,
    MessageError as MessageError,
    RequestReceived as RequestReceived,
    ResultReceived as ResultReceived,
    format_remote_exception as format_remote_exception,
    remote_type_name as remote_type_name,
)

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "EXCEPTION",
    "REQUEST",
    "RESULT",
    "Address",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ChannelProtocol",
    "ChannelStatistics",
    "CodecSpec",
    "ExceptionReceived",
    "MessageError",
    "RemoteException",
    "Request",
    "RequestReceived",
    "ResultReceived",
    "format_remote_exception",
    "open_channel",
    "open_connection",
    "remote_type_name",
    "start_server",
]

_fix_public_modules(globals())
