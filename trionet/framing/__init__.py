"""Length-prefix framing: a sans-I/O decoder and encoder, and a trio stream driver.

The decoder and encoder (:class:`LengthPrefixDecoder`, :class:`LengthPrefixEncoder`) do no I/O
and import no trio; :class:`FramedStream` drives them over any :class:`trio.abc.Stream`. Both
the request-reply Channel (4-byte big-endian lengths, as aiomas) and AsyncAProto (1 to 8 bytes,
either order, with 2 extra header bytes counted in the length) sit on this module: their bytes
go through ``_driver.StreamDriver``, the one framed reader/writer (file-descriptor reads and
``writev`` on sockets, coalesced output, backpressure), which FramedStream is built on too.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ._length_prefix import (
    DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA as NEED_DATA,
    LengthPrefixDecoder as LengthPrefixDecoder,
    LengthPrefixEncoder as LengthPrefixEncoder,
    NeedData as NeedData,
)
from ._stream import FramedStream as FramedStream

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "FramedStream",
    "LengthPrefixDecoder",
    "LengthPrefixEncoder",
    "NeedData",
]

_fix_public_modules(globals())
