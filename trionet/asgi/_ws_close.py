"""Give a websocket application the close code that really ended the connection under Hypercorn.

Hypercorn 0.17/0.18 answer a client's close frame correctly on the wire (they echo its code),
but then tell the application ``websocket.disconnect`` with code 1006 ("closed without a close
frame") whenever the application had not closed first: ``WSStream.handle(StreamClosed)`` only
knows whether the *application* closed, and the peer's ``CloseConnection`` event, which carries
the code and reason, is dropped after the echo. A raw ASGI application sees the same.

:func:`install_close_code_passing` changes two methods of Hypercorn's ``WSStream`` class (once
per process, for every server in it, whichever trio worker runs Hypercorn's protocol classes):

* ``_send_wsproto_event`` remembers the first close frame Hypercorn sends while the application
  has not closed: the echo of the peer's close (the peer's code and reason; 1005 when its frame
  had no code), or Hypercorn's own 1009 for an oversized message.
* ``handle(StreamClosed)`` then reports that code and reason in ``websocket.disconnect``
  instead of 1006. Without a close frame (the peer vanished) it still reports 1006.

A Hypercorn whose internals differ from the ones this was written for is left alone (with a
warning): its applications see what Hypercorn reports.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("trionet.asgi")

_ATTRIBUTE = "_trionet_close_frame"


def install_close_code_passing() -> None:
    """Patch Hypercorn's ``WSStream`` so ``websocket.disconnect`` carries the real close code."""
    from hypercorn.protocol import ws_stream

    stream_class: Any = getattr(ws_stream, "WSStream", None)
    if stream_class is None or getattr(stream_class, "_trionet_close_codes", False):
        return
    state_class: Any = getattr(ws_stream, "ASGIWebsocketState", None)
    stream_closed: Any = getattr(ws_stream, "StreamClosed", None)
    close_event: Any = getattr(ws_stream, "CloseConnection", None)
    original_send: Any = getattr(stream_class, "_send_wsproto_event", None)
    original_handle: Any = getattr(stream_class, "handle", None)
    connected: Any = getattr(state_class, "CONNECTED", None)
    needed = (stream_closed, close_event, original_send, original_handle, connected)
    if any(part is None for part in needed):
        logger.warning(
            "cannot pass websocket close codes on (unknown Hypercorn internals): a handler "
            "sees 1006 when the client closes first"
        )
        return

    async def _send_wsproto_event(self: Any, event: Any) -> None:
        if (
            isinstance(event, close_event)
            and self.state is connected
            and getattr(self, _ATTRIBUTE, None) is None
        ):
            setattr(self, _ATTRIBUTE, (int(event.code), event.reason or ""))
        await original_send(self, event)

    async def handle(self: Any, event: Any) -> None:
        frame = getattr(self, _ATTRIBUTE, None)
        if (
            frame is not None
            and isinstance(event, stream_closed)
            and not self.closed
            and self.app_put is not None
            and self.state is connected
        ):
            # What Hypercorn does here, with the close frame's code instead of 1006.
            self.closed = True
            code, reason = frame
            await self.app_put({"type": "websocket.disconnect", "code": code, "reason": reason})
            return
        await original_handle(self, event)

    stream_class._send_wsproto_event = _send_wsproto_event
    stream_class.handle = handle
    stream_class._trionet_close_codes = True
