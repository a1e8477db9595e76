"""Sans-I/O tests of the channel protocol: frames and messages, no sockets, no trio."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, strategies as st

from trionet.channel import (
    EXCEPTION,
    REQUEST,
    RESULT,
    ChannelProtocol,
    ExceptionReceived,
    MessageError,
    RequestReceived,
    ResultReceived,
    format_remote_exception,
    remote_type_name,
)
from trionet.errors import ChannelError, CodecError, FrameTooLarge, IncompleteFrame


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def jframe(message: Any) -> bytes:
    return frame(json.dumps(message).encode())


def test_constants_match_aiomas() -> None:
    assert (REQUEST, RESULT, EXCEPTION) == (0, 1, 2)


def test_request_frame_is_aiomas_wire_format() -> None:
    proto = ChannelProtocol("json")
    msg_id, data = proto.request(["ping", 42])
    assert msg_id == 0
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:]) == [0, 0, ["ping", 42]]
    assert proto.request("again")[0] == 1
    assert proto.pending == 2
    assert proto.next_id == 2


def test_msgpack_frames() -> None:
    proto = ChannelProtocol("msgpack")
    _, data = proto.request({"k": b"\x00\xff"})
    assert msgpack.unpackb(data[4:], raw=False) == [0, 0, {"k": b"\x00\xff"}]
    assert msgpack.unpackb(proto.result(7, "ok")[4:], raw=False) == [1, 7, "ok"]


def test_result_and_exception_frames() -> None:
    proto = ChannelProtocol()
    assert json.loads(proto.result(3, {"a": 1})[4:]) == [1, 3, {"a": 1}]
    try:
        raise ValueError("no good")
    except ValueError as exc:
        body = json.loads(proto.exception(4, exc)[4:])
    assert body[:2] == [2, 4]
    assert body[2].startswith("Traceback (most recent call last):")
    assert body[2].rstrip().endswith("ValueError: no good")
    assert json.loads(proto.exception(5, "text as is")[4:]) == [2, 5, "text as is"]


def test_reply_matching_returns_tokens() -> None:
    proto = ChannelProtocol()
    token_a, token_b = object(), object()
    id_a, _ = proto.request("a", token_a)
    id_b, _ = proto.request("b", token_b)
    text = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nKeyError: \'x\'\n'
    events = proto.receive_data(jframe([RESULT, id_b, "B"]) + jframe([EXCEPTION, id_a, text]))
    assert events == [
        ResultReceived(id_b, token_b, "B"),
        ExceptionReceived(id_a, token_a, text, "KeyError"),
    ]
    assert proto.pending == 0


def test_requests_from_peer() -> None:
    proto = ChannelProtocol()
    events = proto.receive_data(jframe([REQUEST, 0, "x"]) + jframe([REQUEST, 9, [1, 2]]))
    assert events == [RequestReceived(0, "x"), RequestReceived(9, [1, 2])]
    assert proto.requests_received == 2


def test_byte_by_byte_needs_more_data_until_complete() -> None:
    proto = ChannelProtocol()
    data = jframe([REQUEST, 0, "héllo"])
    for i in range(len(data) - 1):
        assert proto.receive_data(data[i : i + 1]) == []
        assert not proto.at_frame_boundary or i == 0
    assert proto.receive_data(data[-1:]) == [RequestReceived(0, "héllo")]
    assert proto.at_frame_boundary


@given(st.lists(st.text(max_size=50), min_size=1, max_size=20), st.data())
def test_any_split_gives_the_same_messages(contents: list[str], data: st.DataObject) -> None:
    wire = b"".join(jframe([REQUEST, i, c]) for i, c in enumerate(contents))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=10)))
    proto = ChannelProtocol()
    events = []
    start = 0
    for cut in [*cuts, len(wire)]:
        if cut > start:  # an empty chunk would mean end of file
            events += proto.receive_data(wire[start:cut])
            start = cut
    assert events == [RequestReceived(i, c) for i, c in enumerate(contents)]


def test_forget_makes_the_reply_late() -> None:
    proto = ChannelProtocol()
    msg_id, _ = proto.request("slow")
    assert proto.forget(msg_id) is True
    assert proto.forget(msg_id) is False
    assert proto.receive_data(jframe([RESULT, msg_id, "too late"])) == []
    assert proto.late_replies == 1
    # A duplicate reply to an id already answered is also dropped as late.
    assert proto.receive_data(jframe([EXCEPTION, msg_id, "again"])) == []
    assert proto.late_replies == 2


def test_forget_all_returns_tokens() -> None:
    proto = ChannelProtocol()
    proto.request(1, "t1")
    proto.request(2, "t2")
    assert proto.forget_all() == ["t1", "t2"]
    assert proto.pending == 0


def test_reply_to_an_id_never_sent_is_an_error() -> None:
    proto = ChannelProtocol()
    proto.request("x")
    with pytest.raises(MessageError, match="unknown request id 5"):
        proto.receive_data(jframe([RESULT, 5, "?"]))
    # Sticky: the connection's framing is no longer trusted.
    with pytest.raises(MessageError):
        proto.receive_data(jframe([REQUEST, 0, "fine"]))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"not": "a list"}, "got dict"),
        ([0, 1], "got 2 elements"),
        ([0, 1, 2, 3], "got 4 elements"),
        ([7, 0, "x"], "unknown message type 7"),
        (["0", 0, "x"], "message type must be an integer"),
        ([True, 0, "x"], "message type must be an integer"),
        ([0, "id", "x"], "message id must be an integer"),
        ([0, 1.5, "x"], "message id must be an integer"),
        (None, "got NoneType"),
    ],
)
def test_malformed_messages(message: Any, match: str) -> None:
    proto = ChannelProtocol()
    with pytest.raises(MessageError, match=match) as info:
        proto.receive_data(jframe(message))
    assert isinstance(info.value, ChannelError)
    assert info.value.fault == "remote"


def test_garbage_codec_bytes() -> None:
    proto = ChannelProtocol("json")
    with pytest.raises(CodecError):
        proto.receive_data(frame(b"\xff\xfe not json"))
    proto = ChannelProtocol("msgpack")
    with pytest.raises(CodecError):
        proto.receive_data(frame(b"\xc1"))  # never used in msgpack


def test_header_announcing_4_gib_fails_before_the_body() -> None:
    proto = ChannelProtocol(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as info:
        proto.receive_data(b"\xff\xff\xff\xff")
    assert info.value.size == 0xFFFFFFFF
    assert info.value.limit == 1024


def test_eof_mid_frame_is_an_incomplete_frame() -> None:
    proto = ChannelProtocol()
    data = jframe([REQUEST, 0, "cut short"])
    assert proto.receive_data(data[:-3]) == []
    with pytest.raises(IncompleteFrame):
        proto.receive_data(b"")


def test_clean_eof() -> None:
    proto = ChannelProtocol()
    assert proto.receive_data(jframe([REQUEST, 0, "last"])) == [RequestReceived(0, "last")]
    assert proto.receive_data(b"") == []


def test_valid_messages_before_bad_input_are_delivered_then_check_raises() -> None:
    proto = ChannelProtocol(max_frame_size=100)
    good = jframe([REQUEST, 0, "good"])
    events = proto.receive_data(good + jframe([9, 9, 9]))
    assert events == [RequestReceived(0, "good")]
    with pytest.raises(MessageError):
        proto.check()
    proto = ChannelProtocol(max_frame_size=100)
    events = proto.receive_data(good + b"\x00\x10\x00\x00")
    assert events == [RequestReceived(0, "good")]
    with pytest.raises(FrameTooLarge):
        proto.check()


def test_check_passes_when_all_is_well() -> None:
    proto = ChannelProtocol()
    proto.receive_data(jframe([REQUEST, 0, 1]))
    proto.check()


def test_sending_too_large_raises_locally_and_nothing_is_pending() -> None:
    proto = ChannelProtocol(max_frame_size=64)
    with pytest.raises(FrameTooLarge) as info:
        proto.request("x" * 100)
    assert info.value.fault == "local"
    assert proto.pending == 0
    assert proto.next_id == 0
    with pytest.raises(FrameTooLarge):
        proto.result(0, "y" * 100)


def test_unencodable_content_raises_codec_error() -> None:
    proto = ChannelProtocol("json")
    with pytest.raises(CodecError) as info:
        proto.request(object())
    assert info.value.fault == "local"
    assert proto.pending == 0


def test_exception_content_that_is_not_text_is_kept_readable() -> None:
    proto = ChannelProtocol()
    msg_id, _ = proto.request("x")
    (event,) = proto.receive_data(jframe([EXCEPTION, msg_id, {"odd": 1}]))
    assert isinstance(event, ExceptionReceived)
    assert event.traceback == "{'odd': 1}"
    assert event.remote_type is None


class CustomError(Exception):
    pass


def _format(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as caught:
        return format_remote_exception(caught)


def test_remote_type_name() -> None:
    assert remote_type_name(_format(ValueError("a\nmulti-line: message"))) == "ValueError"
    assert remote_type_name(_format(CustomError())).endswith("CustomError")  # type: ignore[union-attr]
    assert remote_type_name(format_remote_exception(KeyError("never raised"))) == "KeyError"
    assert remote_type_name("Traceback (most recent call last):\n  File ...\nOSError\n") == (
        "OSError"
    )
    assert remote_type_name("something else entirely") is None
    assert remote_type_name("Traceback...\nbad.: x") is None
    assert remote_type_name("") is None


def test_remote_type_name_of_chained_exceptions_is_the_last() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        text = format_remote_exception(exc)
    assert "KeyError" in text
    assert remote_type_name(text) == "RuntimeError"


def test_remote_type_name_of_an_exception_group() -> None:
    group = ExceptionGroup("several", [ValueError("v"), TypeError("t")])
    assert remote_type_name(_format(group)) == "ExceptionGroup"


def test_public_names_and_no_asyncio() -> None:
    import subprocess
    import sys

    import trionet.channel
    import trionet.rpc

    for module in (trionet.channel, trionet.rpc):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and obj.__module__.startswith(module.__name__):
                assert obj.__module__ == module.__name__, name
    assert trionet.channel.Channel.__module__ == "trionet.channel"
    code = (
        "import sys, trionet.channel, trionet.rpc\n"
        "assert 'asyncio' not in sys.modules, 'trionet imported asyncio'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@given(st.binary(max_size=200), st.sampled_from(["json", "msgpack"]))
def test_arbitrary_bytes_give_messages_or_a_protocol_error(data: bytes, codec: str) -> None:
    from trionet.errors import ProtocolError

    proto = ChannelProtocol(codec, max_frame_size=1000)
    proto.request("so that reply ids 0 exists")
    try:
        proto.receive_data(data)
        proto.receive_data(b"")
        proto.check()
    except ProtocolError as exc:
        assert exc.fault == "remote"


def test_codec_given_as_a_class_or_object() -> None:
    from trionet.codecs import JSON, MsgPack

    assert isinstance(ChannelProtocol(MsgPack).codec, MsgPack)
    codec = JSON()
    assert ChannelProtocol(codec).codec is codec
    with pytest.raises(ValueError, match="unknown codec"):
        ChannelProtocol("no-such-codec")
