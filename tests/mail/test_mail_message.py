"""MailMessage and Attachment: the MIME tree they build, and parsing messages back (no network)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
from email.message import EmailMessage
from pathlib import Path

import pytest

from trionet.errors import MailError
from trionet.mail import Attachment, MailMessage, MailMessageError, parse_message

ALICE = "alice@example.test"
BOB = "bob@example.test"


def structure(raw: bytes) -> list[str]:
    """The content types of a message's parts, depth-first, indented by nesting."""
    out: list[str] = []

    def walk(part: email.message.Message, depth: int) -> None:
        out.append("  " * depth + part.get_content_type())
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            for sub in payload:
                assert isinstance(sub, email.message.Message)
                walk(sub, depth + 1)

    walk(email.message_from_bytes(raw), 0)
    return out


def modern(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_the_seed_example_appends_an_attachment() -> None:
    pdf_content = b"%PDF-1.4\n" + os.urandom(1000)
    message = MailMessage(
        subject="Test Message",
        sender="sender@example.com",
        recipients=["recipient@example.com"],
        text_content="Hello from mtaio",
        html_content="<h1>Hello from mtaio</h1>",
    )
    attachment = Attachment(
        filename="document.pdf", content=pdf_content, content_type="application/pdf"
    )
    message.attachments.append(attachment)
    assert structure(message.as_bytes()) == [
        "multipart/mixed",
        "  multipart/alternative",
        "    text/plain",
        "    text/html",
        "  application/pdf",
    ]
    # every message gets its own list: appending to one does not touch another
    assert MailMessage("s", ALICE, [BOB]).attachments == []


def test_headers_message_id_date_and_bcc() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    message = MailMessage(
        "Grüße aus Köln – テスト",
        "Älice Example <alice@example.test>",
        ["Bob <bob@example.test>", '"Doe, John" <john@example.test>'],
        text_content="hi",
        cc=["carol@example.test"],
        bcc=["secret@example.test"],
        reply_to="replies@example.test",
        headers={"X-Tag": "one", "In-Reply-To": "<older@example.test>"},
        date=when,
    )
    raw = message.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # non-ASCII only as RFC 2047 encoded-words
    assert b"=?utf-8?" in head
    assert b"secret@example.test" not in raw  # Bcc is envelope-only
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")

    parsed = modern(raw)
    assert parsed["Subject"] == "Grüße aus Köln – テスト"
    assert str(parsed["From"]) == "Älice Example <alice@example.test>"
    assert parsed["Message-ID"] == message.message_id
    assert message.message_id is not None and message.message_id.endswith("@example.test>")
    assert parsed["Date"].datetime == when
    assert parsed["X-Tag"] == "one"
    assert message.envelope_sender == ALICE
    assert message.envelope_recipients == [
        BOB, "john@example.test", "carol@example.test", "secret@example.test"
    ]
    # a new message gets a new Message-ID
    assert MailMessage("s", ALICE, [BOB]).message_id != MailMessage("s", ALICE, [BOB]).message_id


def test_full_tree_with_inline_image_round_trips() -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(300)
    blob = os.urandom(100_000)
    message = MailMessage(
        "Bericht ✓",
        ALICE,
        [BOB],
        text_content="Hallo Bob,\nsiehe Anhang.\n",
        html_content='<p>Hallo <img src="cid:logo-1"></p>\n',
    )
    message.attachments += [
        Attachment("logo.png", png, "image/png", content_id="<logo-1>"),
        Attachment("data.bin", blob, "application/octet-stream"),
        Attachment("Übersicht – 日本語 résumé.pdf", b"%PDF-1.7 tiny", "application/pdf"),
    ]
    raw = message.as_bytes()
    assert structure(raw) == [
        "multipart/mixed",
        "  multipart/alternative",
        "    text/plain",
        "    multipart/related",
        "      text/html",
        "      image/png",
        "  application/octet-stream",
        "  application/pdf",
    ]
    assert raw.count(b"MIME-Version") == 1
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    # the non-ASCII filename: RFC 2231 in Content-Disposition, RFC 2047 in Content-Type's name
    pdf_headers = raw[raw.index(b"Content-Disposition: attachment;\r\n filename*") :]
    assert b"filename*" in pdf_headers and b'name="=?utf-8?b?' in pdf_headers

    parsed = MailMessage.parse(raw)
    assert parsed.subject == "Bericht ✓"
    assert parsed.text_content == "Hallo Bob,\nsiehe Anhang.\n"
    assert parsed.html_content == '<p>Hallo <img src="cid:logo-1"></p>\n'
    assert [(a.filename, a.content_type, a.content_id, a.inline) for a in parsed.attachments] == [
        ("logo.png", "image/png", "logo-1", True),
        ("data.bin", "application/octet-stream", None, False),
        ("Übersicht – 日本語 résumé.pdf", "application/pdf", None, False),
    ]
    assert [a.content for a in parsed.attachments] == [png, blob, b"%PDF-1.7 tiny"]
    assert parsed.message_id == message.message_id
    assert parsed.raw == raw
    # the standard library reads the filename the same way
    modern_names = [part.get_filename() for part in modern(raw).iter_attachments()]
    assert modern_names == ["data.bin", "Übersicht – 日本語 résumé.pdf"]


def test_only_html_or_only_attachments() -> None:
    html_only = MailMessage("s", ALICE, [BOB], html_content="<b>x</b>")
    html_only.attachments.append(Attachment("i.gif", b"GIF89a", "image/gif", content_id="i1"))
    assert structure(html_only.as_bytes()) == ["multipart/related", "  text/html", "  image/gif"]

    files_only = MailMessage("s", ALICE, [BOB])
    files_only.attachments.append(
        Attachment("a.txt", "plain text ✓\n", "text/plain")  # type: ignore[arg-type]
    )
    raw = files_only.as_bytes()
    assert structure(raw) == ["multipart/mixed", "  text/plain"]
    parsed = parse_message(raw)
    assert parsed.text_content is None
    assert parsed.attachments[0].content == "plain text ✓\n".encode()

    empty = MailMessage("nothing", ALICE, [BOB])
    assert parse_message(empty.as_bytes()).text_content == "\n"


def test_parse_charsets_and_legacy_encodings() -> None:
    latin1 = (
        b"From: =?iso-8859-1?q?J=FCrgen?= <j@example.test>\r\n"
        b"To: bob@example.test\r\n"
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
        b"Date: Fri, 02 Jan 2026 03:04:05 +0100\r\n"
        b"Message-ID: <m1@example.test>\r\n"
        b"X-Folded: a\r\n b\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        b"Gr\xfc\xdfe\r\n"
    )
    parsed = parse_message(latin1)
    assert parsed.sender == "Jürgen <j@example.test>"
    assert parsed.subject == "Grüße"
    assert parsed.text_content == "Grüße\n"
    assert parsed.date == dt.datetime(2026, 1, 2, 2, 4, 5, tzinfo=dt.UTC)
    assert parsed.headers["X-Folded"] == "a b"
    assert parsed.message_id == "<m1@example.test>"

    unknown = latin1.replace(b"charset=iso-8859-1", b"charset=x-no-such-charset")
    assert parse_message(unknown).text_content == "Gr\ufffd\ufffde\n"

    mislabelled = latin1.replace(b"charset=iso-8859-1", b"charset=us-ascii").replace(
        b"Gr\xfc\xdfe", "Grüße".encode()
    )
    assert parse_message(mislabelled).text_content == "Grüße\n"

    outlook = (
        b"From: a@example.test\r\nTo: b@example.test\r\nSubject: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b"--XX\r\nContent-Type: application/octet-stream;\r\n"
        b' name="=?utf-8?b?w6R0c2No4oCZLmJpbg==?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XX--\r\n"
    )
    parsed = parse_message(outlook)
    assert parsed.text_content == "body"  # the CRLF before a boundary belongs to it
    assert [(a.filename, a.content) for a in parsed.attachments] == [("ätsch’.bin", b"\0\1\2")]
    assert parsed.message_id == ""  # none in the message: not invented


def test_forwarded_message_attachment() -> None:
    inner = MailMessage("inner", ALICE, [BOB], text_content="inside\n")
    outer = MailMessage("outer", ALICE, [BOB], text_content="see attached\n")
    outer.attachments.append(Attachment("fwd.eml", inner.as_bytes(), "message/rfc822"))
    raw = outer.as_bytes()
    assert structure(raw)[:3] == ["multipart/mixed", "  text/plain", "  message/rfc822"]
    parsed = parse_message(raw)
    assert parsed.text_content == "see attached\n"
    (attached,) = parsed.attachments
    assert attached.content_type == "message/rfc822"
    assert parse_message(attached.content).text_content == "inside\n"


def test_attachment_types_and_defaults() -> None:
    assert Attachment("photo.JPG", b"x", None).content_type == "image/jpeg"
    assert Attachment("notes", b"x", None).content_type == "application/octet-stream"
    image = Attachment("a.png", bytearray(b"png"), "Image/PNG")  # type: ignore[arg-type]
    assert (image.maintype, image.subtype, image.content, image.size) == (
        "image", "png", b"png", 3
    )
    assert Attachment("a.txt", "ü", "text/plain").content == "ü".encode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Attachment("a", b"x", "pdf"), "maintype/subtype"),
        (lambda: Attachment("a", b"x", "multipart/mixed"), "multipart"),
        (lambda: Attachment("a", 42, "text/plain"), "bytes or str"),  # type: ignore[arg-type]
        (lambda: Attachment("a\r\nb", b"x"), "line breaks"),
        (lambda: Attachment("a", b"x", content_id="a b"), "content_id"),
    ],
)
def test_invalid_attachments(make: object, match: str) -> None:
    with pytest.raises(MailMessageError, match=match) as caught:
        make()  # type: ignore[operator]
    assert isinstance(caught.value, MailError) and isinstance(caught.value, ValueError)
    assert caught.value.fault == "local"


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (MailMessage("s", ALICE, []), "no recipient"),
        (MailMessage("bad\r\nBcc: x@example.test", ALICE, [BOB]), "line breaks"),
        (MailMessage("s", "not an address", [BOB]), "sender"),
        (MailMessage("s", ALICE, ["a@example.test, b@example.test"]), "one valid"),
        (MailMessage("s", ALICE, [BOB], headers={"Subject": "x"}), "own fields"),
        (MailMessage("s", ALICE, [BOB], headers={"Bad Name": "x"}), "header name"),
        (MailMessage("s", ALICE, [BOB], headers={"X-A": "a\nb"}), "line breaks"),
        (MailMessage("s", ALICE, [BOB], attachments=[b"x"]), "Attachment objects"),  # type: ignore[list-item]
        (MailMessage("s", ALICE, [BOB], text_content=b"x"), "text_content"),  # type: ignore[arg-type]
    ],
)
def test_invalid_messages(message: MailMessage, match: str) -> None:
    with pytest.raises(MailMessageError, match=match):
        message.as_bytes()


def test_lenient_constructor_inputs() -> None:
    message = MailMessage("s", ALICE, BOB, cc=None, bcc=("x@example.test",))  # type: ignore[arg-type]
    assert message.recipients == [BOB]
    assert message.cc == []
    assert message.bcc == ["x@example.test"]


def test_non_ascii_addresses_need_smtputf8() -> None:
    ascii_message = MailMessage("s", ALICE, [BOB])
    assert not ascii_message.needs_smtputf8
    message = MailMessage("s", ALICE, ["jörg@example.test"], text_content="x")
    assert message.needs_smtputf8
    raw = message.as_bytes(utf8=True)
    assert "To: jörg@example.test".encode() in raw
    parsed = parse_message(raw)  # raw UTF-8 header bytes, as an SMTPUTF8 server stores them
    assert parsed.recipients == ["jörg@example.test"]
    assert parse_message("From: Jörg <jörg@example.test>\r\n\r\nx".encode()).sender == (
        "Jörg <jörg@example.test>"
    )


async def test_attachment_from_path(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    attachment = await Attachment.from_path(path)
    assert (attachment.filename, attachment.content_type, attachment.content) == (
        "report.csv", "text/csv", b"a,b\n1,2\n"
    )
    renamed = await Attachment.from_path(str(path), "application/octet-stream", filename="x.bin")
    assert (renamed.filename, renamed.content_type) == ("x.bin", "application/octet-stream")
