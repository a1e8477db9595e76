"""The IMAP client's sans-I/O helpers: UID sets, mailbox names and response parsers."""

from __future__ import annotations

import pytest

from trionet.mail import IMAPProtocolError, MailMessageError
from trionet.mail._imap_protocol import (
    FetchedItem,
    MailboxInfo,
    decode_mailbox_name,
    encode_mailbox_name,
    format_uid_set,
    parse_fetch_responses,
    parse_list_response,
    parse_uid_set,
    quote_string,
    split_response_code,
)
from trionet.mail._transport import plain_initial_response, xoauth2_initial_response


def test_uid_sets() -> None:
    assert format_uid_set([9, 1, 2, 3, 7, 10, 3]) == "1:3,7,9:10"
    assert format_uid_set([5]) == "5"
    assert parse_uid_set("1:3,7,10:9") == [1, 2, 3, 7, 10, 9]
    for bad in ([], [0], [-1], [True], ["1"]):
        with pytest.raises(MailMessageError):
            format_uid_set(bad)  # type: ignore[arg-type]
    with pytest.raises(IMAPProtocolError):
        parse_uid_set("1:*")


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501's example
        ("😀 smile", "&2D3eAA- smile"),
    ],
)
def test_modified_utf7_mailbox_names(name: str, wire: str) -> None:
    assert encode_mailbox_name(name) == wire
    assert decode_mailbox_name(wire) == name


def test_malformed_mailbox_names_pass_through() -> None:
    assert decode_mailbox_name("&!!!-") == "&!!!-"


def test_quote_string() -> None:
    assert quote_string('a "b" \\c') == '"a \\"b\\" \\\\c"'
    with pytest.raises(MailMessageError):
        quote_string("a\r\nb")


def test_fetch_responses_with_literals_and_extra_updates() -> None:
    body1 = b"Subject: one\r\n\r\nbody ) ( {5}\r\n"
    body2 = b"Subject: two\r\n\r\n"
    data: list[bytes | tuple[bytes, bytes] | None] = [
        (b"1 (UID 10 FLAGS (\\Seen \\Flagged) BODY[] {%d}" % len(body1), body1),
        b")",
        (b"2 (UID 11 BODY[] {%d}" % len(body2), body2),
        b" FLAGS (\\Answered $Label1))",
        b"3 (FLAGS (\\Deleted))",  # an unsolicited update, without UID
        b'4 (UID 13 FLAGS () BODY[] "quoted body")',
        b"5 (UID 14 FLAGS () BODY[] NIL)",
        None,
    ]
    assert parse_fetch_responses(data) == [
        FetchedItem(1, 10, frozenset({"\\Seen", "\\Flagged"}), body1),
        FetchedItem(2, 11, frozenset({"\\Answered", "$Label1"}), body2),
        FetchedItem(3, None, frozenset({"\\Deleted"}), None),
        FetchedItem(4, 13, frozenset(), b"quoted body"),
        FetchedItem(5, 14, frozenset(), None),
    ]


def test_fetch_section_names_with_spaces() -> None:
    data: list[bytes | tuple[bytes, bytes] | None] = [
        (b"7 (UID 3 BODY[HEADER.FIELDS (SUBJECT DATE)] {4}", b"x\r\n\r"), b" BODY[] {2}"
    ]
    # a literal announced without its data is malformed
    with pytest.raises(IMAPProtocolError):
        parse_fetch_responses(data)
    ok: list[bytes | tuple[bytes, bytes] | None] = [
        (b"7 (UID 3 BODY[HEADER.FIELDS (SUBJECT DATE)] {4}", b"x\r\n\r"), b")"
    ]
    assert parse_fetch_responses(ok) == [FetchedItem(7, 3, None, None)]


@pytest.mark.parametrize(
    "bad",
    [
        [b"x (UID 1)"],
        [b"1 (UID one)"],
        [b"1 (UID 1 FLAGS"],
        [b"1 (UID)"],
        [b'1 (UID 1 BODY[] "unterminated)'],
    ],
)
def test_malformed_fetch_responses(bad: list[bytes | tuple[bytes, bytes] | None]) -> None:
    with pytest.raises(IMAPProtocolError):
        parse_fetch_responses(bad)


def test_list_responses() -> None:
    data: list[bytes | tuple[bytes, bytes] | None] = [
        b'(\\HasNoChildren) "." INBOX',
        b'(\\HasChildren \\Noselect) "/" "Archive 2026"',
        (b'(\\HasNoChildren \\Sent) "." {12}', b"Entw&APw-rfe"),
        b"(\\Noinferiors) NIL Flat",
    ]
    boxes = parse_list_response(data)
    assert boxes == [
        MailboxInfo("INBOX", frozenset({"\\HasNoChildren"}), "."),
        MailboxInfo("Archive 2026", frozenset({"\\HasChildren", "\\Noselect"}), "/"),
        MailboxInfo("Entwürfe", frozenset({"\\HasNoChildren", "\\Sent"}), "."),
        MailboxInfo("Flat", frozenset({"\\Noinferiors"}), None),
    ]
    assert [box.selectable for box in boxes] == [True, False, True, True]
    with pytest.raises(IMAPProtocolError):
        parse_list_response([b"(\\X) \".\""])


def test_response_codes() -> None:
    assert split_response_code("[AUTHENTICATIONFAILED] Authentication failed.") == (
        "AUTHENTICATIONFAILED", None, "Authentication failed."
    )
    assert split_response_code("[COPYUID 123 1:2 5:6] Moved") == ("COPYUID", "123 1:2 5:6", "Moved")
    assert split_response_code("plain text") == (None, None, "plain text")


def test_sasl_initial_responses() -> None:
    assert plain_initial_response("user", "pässword") == "AHVzZXIAcMOkc3N3b3Jk"
    # the XOAUTH2 example from Google's documentation
    token = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    assert xoauth2_initial_response("someuser@example.com", token) == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
        "YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


def test_deeply_nested_lists_are_refused() -> None:
    """A server that nests thousands of lists gets IMAPProtocolError, never RecursionError;
    nesting up to MAX_NESTING parses."""
    from trionet.mail._imap_protocol import MAX_NESTING

    for depth in (MAX_NESTING + 1, 10_000, 500_000):
        line = b"1 (UID 7 X " + b"(" * depth + b")" * depth + b")"
        with pytest.raises(IMAPProtocolError, match="nested deeper"):
            parse_fetch_responses([line])
        with pytest.raises(IMAPProtocolError, match="nested deeper"):
            parse_list_response([b"(" * depth + b")" * depth + b' "/" INBOX'])
    deep = MAX_NESTING - 1
    line = b"1 (UID 7 X " + b"(" * deep + b")" * deep + b")"
    assert parse_fetch_responses([line]) == [FetchedItem(1, 7, None, None)]
