"""Fields read from untrusted messages never raise anything but the documented error."""

from __future__ import annotations

import math

import msgpack
import pytest

from trionet.bus import BusMessage, EnvelopeError
from trionet.bus._message import decode_envelope, encode_envelope
from trionet.kafka._records import KafkaRecord
from trionet.kafka._requestreply import DEADLINE_HEADER, _request_deadline


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf, 1e300, 2**63, 2**64 - 1])
def test_msgpack_envelope_timestamps_out_of_range_are_envelope_errors(timestamp: float) -> None:
    data = msgpack.packb({"payload": b"x", "topic": "t", "timestamp": timestamp})
    with pytest.raises(EnvelopeError, match="timestamp"):
        decode_envelope(data)


@pytest.mark.parametrize("timestamp", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"9" * 400])
def test_json_envelope_timestamps_out_of_range_are_envelope_errors(timestamp: bytes) -> None:
    data = b'{"payload": "", "topic": "t", "timestamp": ' + timestamp + b"}"
    with pytest.raises(EnvelopeError, match="timestamp"):
        decode_envelope(data)


def test_envelope_timestamps_in_range_still_work() -> None:
    message = BusMessage(b"x", "t", timestamp=1_765_000_000)
    assert decode_envelope(encode_envelope(message)).timestamp == 1_765_000_000


@pytest.mark.parametrize("raw", [b"9" * 4000, b"9" * 400, b"-" + b"9" * 400, b"1e9", b"\xff"])
def test_kafka_request_deadline_header_never_raises(raw: bytes) -> None:
    record = KafkaRecord("t", 0, 0, None, b"", [(DEADLINE_HEADER, raw)], 0, 0)
    deadline = _request_deadline(record)
    assert deadline is None or isinstance(deadline, float)
