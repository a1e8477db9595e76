"""Building blocks for the benchmarks' raw bounds; imports nothing from trionet.

A bound is the leanest code a careful user could write by hand for the same job, so that a
ratio against it says what trionet's abstractions cost. These helpers use the fastest standard
calls we know of:

* JSON: the ``json`` module's C encoder made once (``json.dumps`` builds it anew per call) and
  the decoder's C ``scan_once`` on text (``json.loads`` sniffs the encoding of bytes first);
  compact separators, non-ASCII kept, as trionet's JSON codec writes.
* msgpack: one ``msgpack.Packer`` reused (``msgpack.packb`` builds one per call) and
  ``msgpack.unpackb(raw=False)``.
* framing: a 4-byte big-endian length prefix parsed with ``struct.unpack_from`` over one
  ``bytearray`` per connection.

``forbid_trionet()`` makes any later ``import trionet`` in the process an error: bound and
peer server processes call it, so "the baseline does not import trionet" is checked, not
assumed.
"""

from __future__ import annotations

import importlib.abc
import json
import json.encoder
import struct
import sys
from collections.abc import Callable
from typing import Any

import msgpack

U32 = struct.Struct(">I")

Encode = Callable[[Any], bytes]
Decode = Callable[[bytes], Any]


def json_codec() -> tuple[Encode, Decode]:
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:  # a Python without the C accelerator

        def encode(value: Any) -> bytes:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    else:
        c_encode = make_encoder(
            None, None, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )

        def encode(value: Any) -> bytes:
            return "".join(c_encode(value, 0)).encode()

    scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def decode(data: bytes) -> Any:
        return scan_once(data.decode(), 0)[0]

    return encode, decode


def msgpack_codec() -> tuple[Encode, Decode]:
    pack = msgpack.Packer(use_bin_type=True).pack
    unpackb = msgpack.unpackb

    def decode(data: bytes) -> Any:
        return unpackb(data, raw=False)

    return pack, decode


def take_frames(buf: bytearray) -> list[bytes]:
    """Removes every complete length-prefixed frame from ``buf``; returns their bodies."""
    frames: list[bytes] = []
    unpack_from = U32.unpack_from
    pos = 0
    end = len(buf)
    while end - pos >= 4:
        (length,) = unpack_from(buf, pos)
        stop = pos + 4 + length
        if stop > end:
            break
        frames.append(bytes(buf[pos + 4 : stop]))
        pos = stop
    if pos:
        del buf[:pos]
    return frames


class _NoTrionet(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "trionet" or name.startswith("trionet."):
            raise ImportError(f"a baseline process must not import {name}")
        return None


def forbid_trionet() -> None:
    """Asserts trionet is not loaded, and makes importing it from now on an ImportError."""
    loaded = [m for m in sys.modules if m == "trionet" or m.startswith("trionet.")]
    if loaded:
        raise RuntimeError(f"a baseline process has already imported {loaded[0]}")
    sys.meta_path.insert(0, _NoTrionet())


class PeerProcess:
    """A peer's worker process (a ``bench/_*_peers.py`` script, which calls
    :func:`forbid_trionet` first): one JSON job a line on its stdin, one JSON answer a line on
    its stdout, one job at a time. An answer with an ``"error"`` key raises."""

    def __init__(self, script: str, *args: str, name: str) -> None:
        import os
        import subprocess

        self.name = name
        here = os.path.dirname(os.path.abspath(__file__))
        self._proc = subprocess.Popen(
            [sys.executable, os.path.join(here, script), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died (its error is above)")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def close(self) -> None:
        import contextlib
        import subprocess

        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
