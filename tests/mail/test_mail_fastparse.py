"""The parsing shortcuts (trionet.mail._fastparse, the FETCH fast path) give exactly what the
email package's calls and the general FETCH parser give, on generated inputs (no network)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
from email.message import Message

import pytest
from hypothesis import example, given, strategies as st

from trionet.mail import MailMessage
from trionet.mail._errors import IMAPProtocolError
from trionet.mail._fastparse import content_charset, date_from_header, message_from_bytes
from trionet.mail._imap_protocol import (
    ResponseItem,
    _group_responses,
    _parse_fetch,
    parse_fetch_responses,
)

SIMPLE = (
    b"Subject: stored 1\r\nFrom: bob@example.test\r\nTo: alice@example.test\r\n"
    b"Date: Tue, 08 Dec 2026 00:21:15 +0000\r\nMessage-ID: <1.2@example.test>\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'
    b"MIME-Version: 1.0\r\n\r\nmessage 1\r\nmessage 1\r\n"
)


def state(message: Message) -> object:
    """Everything a parser sets on a compat32 message tree."""
    payload = message.get_payload()
    if isinstance(payload, list):
        payload = [state(part) for part in payload if isinstance(part, Message)]
    return (
        type(message),
        list(message.raw_items()),  # what the parser stored, exactly
        payload,
        [type(defect) for defect in message.defects],
        message.get_unixfrom(),
        message.preamble,
        message.epilogue,
        message.get_default_type(),
    )


def check_message(raw: bytes) -> None:
    assert state(message_from_bytes(raw)) == state(
        email.message_from_bytes(raw, policy=email.policy.compat32)
    )


# pieces of messages, well and badly formed, that the shortcut must either read as the feed
# parser does or leave to it
header_lines = st.sampled_from(
    [
        "Subject: hello", "Subject:", "Subject:\ttab", "Subject:   \t spaced  ",
        "X-Weird_Name.1: v", " continued", "\tcontinued tab", " ",
        "From alice Mon Jan  1 00:00:00 2026",
        "From: a@b", ": no name", "no colon", "Bad Name: v", "Caf\xe9: v", "X: caf\xe9",
        "Content-Type: text/plain", "Content-Type: multipart/mixed; boundary=b",
        "Content-Type: message/rfc822", "CONTENT-TYPE: Multipart/Alternative; boundary=b",
        "Content-Type: message /rfc822", "Content-Type: text/plain; name=\"message/x\"",
        "X-Control: a\x0bb\x0cc\x1cd\x85e", "X-Long: " + "x" * 9000, "Subject: a\rb",
        "Subject: a\nb", "Subject: x\r", "\x7f: v",
    ]
)
line_ends = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r"])
bodies = st.sampled_from(
    ["", "body\r\n", "line\r\n\r\nmore\r\n", "bare\nlf\rcr", "caf\xe9\r\n",
     "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(header_lines, line_ends), max_size=8))
    head = "".join(line + end for line, end in lines)
    separator = draw(st.sampled_from(["\r\n", "\r\n", "\n", ""]))
    text = head + separator + draw(bodies)
    return text.encode("utf-8", "surrogateescape")


@given(messages())
@example(SIMPLE)
@example(b"\r\n\r\nbody")
@example(b"Subject: x\r\n")
@example(b"Subject: x\r\n\r\n")
@example(b"Subject: x\r\n \r\n\r\nbody")
@example(b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--")
def test_message_tree_is_the_feed_parsers(raw: bytes) -> None:
    check_message(raw)


def test_a_stored_message_takes_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    # (and a header longer than the feed parser's 8 KiB chunks, folded)
    long = b"X-Long: " + b"y" * 20000 + b"\r\n folded\r\n" + SIMPLE
    expected = {
        raw: state(email.message_from_bytes(raw, policy=email.policy.compat32))
        for raw in (SIMPLE, long)
    }

    def refuse(*args: object, **kwargs: object) -> Message:
        raise AssertionError("the feed parser was used")

    monkeypatch.setattr(email, "message_from_bytes", refuse)
    for raw, want in expected.items():
        assert state(message_from_bytes(raw)) == want
    parsed = MailMessage.parse(SIMPLE, uid=1)
    assert (parsed.subject, parsed.sender, parsed.recipients, parsed.text_content) == (
        "stored 1", "bob@example.test", ["alice@example.test"], "message 1\nmessage 1\n"
    )
    assert parsed.date == dt.datetime(2026, 12, 8, 0, 21, 15, tzinfo=dt.UTC)


def test_adversarial_header_blocks_stay_linear() -> None:
    # one huge line without a colon, many short fields: parsed (or refused) in one pass
    for raw in (b"x" * 2_000_000 + b"\r\n\r\n", b"a: b\r\n" * 200_000 + b"\r\n"):
        check_message(raw)


charset_values = st.builds(
    "".join,
    st.lists(
        st.sampled_from(
            ["text/plain", "Text/HTML", "text", "text/plain/x", ";", " ", "\t", "charset",
             "CharSet", "=", '"', "utf-8", "UTF-8", "iso-8859-1", "caf\xe9", "format=flowed",
             "name=x", "charset*=utf-8''x", "charset*0=us-ascii", "\\", "'", "(c)", "a=b;"]
        ),
        max_size=10,
    ),
)


@given(charset_values)
@example('text/plain; charset="utf-8"')
@example("text/plain; charset=UTF-8; format=flowed")
@example("charset=a; charset=b")
@example('text/"plain; charset=a"; charset=b')
@example("text/plain; charset=a; charset*=utf-8''b")
def test_charset_is_get_content_charsets(value: str) -> None:
    message = Message()
    message.set_raw("Content-Type", value)
    assert content_charset(message) == message.get_content_charset()
    message.set_raw("Content-Type", "text/plain; charset=second")
    assert content_charset(message) == message.get_content_charset()
    assert content_charset(Message()) is None


date_texts = st.builds(
    "{}{} {} {} {}:{}:{} {}{}".format,
    st.sampled_from(["", "Tue, ", "Xyz, ", "Mon,"]),
    st.sampled_from(["1", "08", "31", "0", "32", "x"]),
    st.sampled_from(["Dec", "Feb", "dec", "Foo"]),
    st.sampled_from(["2026", "1999", "0999", "0099", "0050", "99", "10000"]),
    st.sampled_from(["00", "23", "24", "7"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "61"]),
    st.sampled_from(["+", "-"]),
    st.sampled_from(["0000", "0530", "2359", "2400", "0099", "9999", "EST", "00"]),
)


def parsed_or_error(parse: object, text: str) -> object:
    assert callable(parse)
    try:
        value = parse(text)
    except ValueError:
        return ValueError
    return value, value.tzinfo, value.utcoffset()


@given(date_texts)
@example("Tue, 08 Dec 2026 00:21:15 +0000")
@example("Tue, 08 Dec 2026 00:21:15 -0000")
@example("Tue, 08 Dec 0099 00:21:15 +0000")
@example("Tue, 31 Feb 2026 00:21:15 +0000")
@example("Tue, 08 Dec 2026 00:21:15 +2400")
@example("Tue, 08 Dec 2026 00:21:15 -0130")
@example("Tue, 08 Dec 2026 00:21:15 +0000 (UTC)")
def test_date_is_parsedate_to_datetimes(text: str) -> None:
    assert parsed_or_error(date_from_header, text) == parsed_or_error(
        email.utils.parsedate_to_datetime, text
    )


# -- FETCH responses ----------------------------------------------------------------------------

fetch_lines = st.builds(
    "{} ({}{}{} {{{}}}".format,
    st.sampled_from(["1", "12", "x", "007", "\u00b2"]),
    st.sampled_from(["UID 7 ", "uid 7 ", "UID 07 ", "", "UID x ", "UID  7 "]),
    st.sampled_from(
        ["FLAGS () ", "FLAGS (\\Seen) ", "FLAGS (\\Seen $Label1) ", "FLAGS (NIL \\Seen) ",
         "FLAGS (nil) ", "FLAGS ( \\Seen) ", "FLAGS (\\Seen  x) ", 'FLAGS ("q") ',
         "FLAGS (a]b) ", "FLAGS (caf\xe9) ", "FLAGS ({1}) ", "FLAGS NIL ", ""]
    ),
    st.sampled_from(["BODY[]", "RFC822", "BINARY[]", "body[]", "BODY[TEXT]"]),
    st.sampled_from(["5", "0", "x", ""]),
)
fetch_rests = st.sampled_from([b")", b" UID 8)", b"", b"))", b" )", b") x"])


@given(st.lists(st.tuples(fetch_lines, st.binary(max_size=8), fetch_rests), max_size=3))
@example([("1 (UID 7 FLAGS (\\Seen $Label1) BODY[] {5}", b"hello", b")")])
@example([("1 (UID 7 FLAGS () RFC822 {5}", b"hello", b")")])
@example([("1 (UID 7 FLAGS (NIL \\Seen nil) BODY[] {5}", b"hello", b")")])
@example([("1 (UID \u00b2 FLAGS () BODY[] {5}", b"hello", b")")])
@example([("\u00b2 (UID 7 FLAGS () BODY[] {5}", b"hello", b")")])
@example([("1 (UID 7 FLAGS (caf\xe9 a}b) BODY[] {5}", b"hello", b")")])
def test_fetch_fast_path_is_the_general_parser(
    responses: list[tuple[str, bytes, bytes]],
) -> None:
    data: list[ResponseItem | None] = []
    for line, literal, rest in responses:
        data.append((line.encode("utf-8", "surrogateescape"), literal))
        if rest:
            data.append(rest)

    def outcome(parse: object) -> object:
        assert callable(parse)
        try:
            return parse()
        except (IMAPProtocolError, ValueError) as exc:
            return type(exc)

    assert outcome(lambda: parse_fetch_responses(data)) == outcome(
        lambda: [_parse_fetch(group) for group in _group_responses(data)]
    )
