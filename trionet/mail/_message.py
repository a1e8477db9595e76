"""MailMessage and Attachment: building a MIME message, and parsing a received one back.

Sans-I/O: nothing here touches the network or awaits, except :meth:`Attachment.from_path`, which
reads a file through :class:`trio.Path`.

The MIME tree built by :meth:`MailMessage.to_email_message`::

    multipart/mixed                      (only if there are attachments)
    ├── multipart/alternative            (only if there is both text and html)
    │   ├── text/plain
    │   └── multipart/related            (only if there are inline parts with a Content-ID)
    │       ├── text/html
    │       └── image/png  (Content-ID, inline)
    ├── application/pdf  (attachment)
    └── ...

Non-ASCII header values are encoded as RFC 2047 encoded-words; a non-ASCII attachment filename is
written both as the RFC 2231 ``filename*=`` parameter of ``Content-Disposition`` (the standard for
parameters) and as an RFC 2047 encoded-word in the ``name=`` parameter of ``Content-Type`` (what
older mail readers look for). Parsing accepts either.
"""

from __future__ import annotations

import datetime as _dt
import email
import email.errors
import email.header
import email.policy
import email.utils
import mimetypes
import re
from collections.abc import Iterable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from email.message import EmailMessage, Message
from os import PathLike
from typing import Any, Final

import trio

from ._errors import MailMessageError
from ._fastparse import content_charset, date_from_header, message_from_bytes

__all__ = ["Attachment", "MailMessage", "parse_message"]

# Lines end in CRLF, non-ASCII headers become RFC 2047 encoded-words, and every body part is
# encoded so that it is 7-bit clean (quoted-printable or base64), which any SMTP server accepts.
_BUILD_POLICY: Final = email.policy.SMTP.clone(cte_type="7bit")
# Same, but with UTF-8 headers, for messages whose addresses need SMTPUTF8 (RFC 6531).
_BUILD_POLICY_UTF8: Final = email.policy.SMTP.clone(cte_type="7bit", utf8=True)

# Guessing content types from the built-in table only: mimetypes.guess_type() would read the
# system's mime.types files on first use, which is blocking I/O.
_MIME_TYPES: Final = mimetypes.MimeTypes(filenames=())

_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CONTENT_TYPE_RE: Final = re.compile(rf"({_TOKEN})/({_TOKEN})")
_HEADER_NAME_RE: Final = re.compile(r"[!-9;-~]+")  # printable ASCII except ':'
_CID_RE: Final = re.compile(r"[!-;=?-~]+")  # printable ASCII except '<' and '>'

# Header fields that MailMessage models itself; they may not be given in ``headers``.
_OWN_HEADERS: Final = frozenset(
    {
        "subject", "from", "to", "cc", "bcc", "reply-to", "message-id", "date", "mime-version",
        "content-type", "content-transfer-encoding", "content-disposition", "content-id",
    }
)


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise MailMessageError(f"{what} must be bytes or str, not {type(value).__name__}")


def _check_line(value: str, what: str) -> None:
    if "\r" in value or "\n" in value:
        raise MailMessageError(f"{what} must not contain line breaks: {value!r}")


@dataclass
class Attachment:
    """A file attached to a :class:`MailMessage` (or an inline part referenced from its HTML).

    Args:
        filename: the file name shown to the reader (may contain any Unicode character).
        content: the file's bytes. ``str`` is accepted and encoded as UTF-8, ``bytearray`` and
            ``memoryview`` are copied to ``bytes``.
        content_type: the MIME type, ``"maintype/subtype"``; ``None`` (the default) guesses it
            from the file name (``application/octet-stream`` if unknown).
        content_id: a Content-ID (without angle brackets) that the HTML body refers to as
            ``cid:<content_id>``; such a part is placed next to the HTML in a
            ``multipart/related`` part.
        inline: ``Content-Disposition: inline`` instead of ``attachment`` (implied by a
            content_id).

    Raises:
        MailMessageError: an argument is of the wrong type or the content type is malformed.
    """

    filename: str
    content: bytes
    content_type: str | None = None
    _: KW_ONLY
    content_id: str | None = None
    inline: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.filename, str):
            raise MailMessageError(
                f"attachment filename must be str, not {type(self.filename).__name__}"
            )
        _check_line(self.filename, "attachment filename")
        self.content = _as_bytes(self.content, "attachment content")
        if self.content_type is None:
            guessed, _ = _MIME_TYPES.guess_type(self.filename, strict=False)
            self.content_type = guessed or "application/octet-stream"
        if not isinstance(self.content_type, str) or not _CONTENT_TYPE_RE.fullmatch(
            self.content_type
        ):
            raise MailMessageError(
                f"attachment content_type must look like 'maintype/subtype', "
                f"not {self.content_type!r}"
            )
        self.content_type = self.content_type.lower()
        if self.maintype == "multipart":
            raise MailMessageError("an attachment cannot be of type multipart/*")
        if self.content_id is not None:
            self.content_id = self.content_id.strip().removeprefix("<").removesuffix(">")
            if not _CID_RE.fullmatch(self.content_id):
                raise MailMessageError(f"invalid content_id {self.content_id!r}")
            self.inline = True

    @property
    def maintype(self) -> str:
        """The part before the slash of :attr:`content_type`, e.g. ``"image"``."""
        return str(self.content_type).partition("/")[0]

    @property
    def subtype(self) -> str:
        """The part after the slash of :attr:`content_type`, e.g. ``"png"``."""
        return str(self.content_type).partition("/")[2]

    @property
    def size(self) -> int:
        """The number of bytes of :attr:`content`."""
        return len(self.content)

    @classmethod
    async def from_path(
        cls,
        path: str | PathLike[str],
        content_type: str | None = None,
        *,
        filename: str | None = None,
        content_id: str | None = None,
        inline: bool = False,
    ) -> Attachment:
        """Read a file (through :class:`trio.Path`, so the event loop is not blocked).

        Args:
            path: the file to attach.
            content_type: its MIME type; guessed from the name if None.
            filename: the name shown to the reader; the path's last component if None.
            content_id: see :class:`Attachment`.
            inline: see :class:`Attachment`.
        """
        file = trio.Path(path)
        content = await file.read_bytes()
        return cls(
            file.name if filename is None else filename,
            content,
            content_type,
            content_id=content_id,
            inline=inline,
        )

    def _add_to(self, message: EmailMessage, *, related: bool) -> None:
        disposition = "inline" if self.inline else "attachment"
        kwargs: dict[str, Any] = {"disposition": disposition}
        if self.filename:
            kwargs["filename"] = self.filename
        if self.content_id is not None:
            kwargs["cid"] = f"<{self.content_id}>"
        adder = message.add_related if related else message.add_attachment
        if self.content_type == "message/rfc822":
            inner = email.message_from_bytes(self.content, policy=_BUILD_POLICY)
            cte = "7bit" if self.content.isascii() else "8bit"
            adder(inner, cte=cte, **kwargs)
        else:
            adder(self.content, maintype=self.maintype, subtype=self.subtype, **kwargs)
        if self.filename and not self.filename.isascii():
            parts = message.get_payload()
            assert isinstance(parts, list)
            part = parts[-1]
            assert isinstance(part, EmailMessage)
            _add_encoded_word_name(part, self.filename)


def _add_encoded_word_name(part: EmailMessage, filename: str) -> None:
    """Add ``name="=?utf-8?b?...?="`` (RFC 2047) to the part's Content-Type, as MUAs do.

    The email package would rewrite such a parameter as RFC 2231, so the header is stored raw,
    folded by hand into lines of at most 78 characters.
    """
    content_type = part.get_content_type()
    params = "".join(
        f'; {key}="{email.utils.quote(value)}"'
        for key, value in (part.get_params(header="Content-Type") or [])[1:]
        if key != "name" and isinstance(value, str)
    )
    encoded = email.header.Header(filename, "utf-8").encode(maxlinelen=66, linesep="\n")
    del part["Content-Type"]
    part.set_raw("Content-Type", f'{content_type}{params};\n name="{encoded}"')


def _address_list(values: Iterable[str], what: str) -> list[str]:
    out = []
    for value in values:
        if not isinstance(value, str):
            raise MailMessageError(f"{what} must be strings, not {type(value).__name__}")
        _check_line(value, what)
        out.append(value)
    return out


def _addr_spec(address: str, what: str) -> str:
    """The bare ``local@domain`` of ``"Name <local@domain>"`` (for the SMTP envelope)."""
    parsed = email.utils.getaddresses([address])
    if len(parsed) != 1 or not parsed[0][1] or "@" not in parsed[0][1]:
        raise MailMessageError(f"{what} {address!r} is not one valid e-mail address")
    return parsed[0][1]


@dataclass
class MailMessage:
    """An e-mail: what you give :meth:`AsyncSMTPClient.send_message`, and what
    :meth:`AsyncIMAPClient.fetch_messages` returns.

    The first ten fields follow mtaio's ``MailMessage`` (same order). ``attachments``, ``cc``,
    ``bcc`` and ``headers`` default to new empty containers, so
    ``message.attachments.append(Attachment(...))`` always works.

    Args:
        subject: the subject (any Unicode; encoded per RFC 2047 when sent).
        sender: the ``From`` address, ``"alice@example.com"`` or ``"Alice <alice@example.com>"``.
        recipients: the ``To`` addresses (a single string counts as one address).
        text_content: the plain-text body.
        html_content: the HTML body (with ``text_content``: a ``multipart/alternative``).
        attachments: files to attach; parts with a ``content_id`` go next to the HTML body.
        cc: the ``Cc`` addresses.
        bcc: addresses that receive the message without appearing in any header.
        reply_to: the ``Reply-To`` address.
        headers: further header fields (``In-Reply-To``, ``List-Id``, ``X-...``); the fields
            modelled above cannot be given here.
        message_id: the ``Message-ID`` (with angle brackets). A new unique one is made when
            None; a parsed message without one has ``""``.
        date: the ``Date``; the time of sending when None.
        uid: the IMAP UID, for a message fetched from a mailbox.
        flags: the IMAP flags (``"\\\\Seen"``, ...), for a message fetched from a mailbox.
        raw: the message exactly as received, for a parsed message.
    """

    subject: str
    sender: str
    recipients: list[str]
    text_content: str | None = None
    html_content: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    _: KW_ONLY
    message_id: str | None = None
    date: _dt.datetime | None = None
    uid: int | None = None
    flags: frozenset[str] = frozenset()
    raw: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # mtaio's defaults were None, and a lone address string is a common slip: accept both.
        for name in ("recipients", "cc", "bcc"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, [])
            elif isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, list):
                setattr(self, name, list(value))
        attachments: object = self.attachments
        if attachments is None:
            self.attachments = []
        elif not isinstance(attachments, list):
            self.attachments = list(self.attachments)
        headers: object = self.headers
        if headers is None:
            self.headers = {}
        self.flags = frozenset(self.flags)
        if self.message_id is None:
            self.message_id = email.utils.make_msgid(domain=self._id_domain())

    def _id_domain(self) -> str:
        if isinstance(self.sender, str):
            _, spec = email.utils.parseaddr(self.sender)
            domain = spec.rpartition("@")[2]
            if domain and domain.isascii() and "@" in spec:
                return domain
        return "trionet.invalid"

    @property
    def seen(self) -> bool:
        """Whether the message carries the IMAP ``\\Seen`` flag."""
        return "\\Seen" in self.flags

    @property
    def envelope_sender(self) -> str:
        """The bare address of :attr:`sender`, for SMTP ``MAIL FROM``."""
        return _addr_spec(self.sender, "sender")

    @property
    def envelope_recipients(self) -> list[str]:
        """The bare addresses of the To, Cc and Bcc recipients, in order, without duplicates."""
        seen: set[str] = set()
        out: list[str] = []
        for what, values in (("recipient", self.recipients), ("cc", self.cc), ("bcc", self.bcc)):
            for value in _address_list(values, what):
                spec = _addr_spec(value, what)
                if spec.lower() not in seen:
                    seen.add(spec.lower())
                    out.append(spec)
        return out

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an envelope address is not ASCII (the server must support SMTPUTF8)."""
        return not self.envelope_sender.isascii() or not all(
            r.isascii() for r in self.envelope_recipients
        )

    # -- building --------------------------------------------------------------------------------

    def to_email_message(self, *, utf8: bool = False) -> EmailMessage:
        """Build the MIME tree as an :class:`email.message.EmailMessage`.

        Args:
            utf8: write header fields in UTF-8 (for an SMTPUTF8 transaction) instead of RFC 2047.

        Raises:
            MailMessageError: a field is invalid (wrong type, line breaks in a header, a header
                that MailMessage models itself given in ``headers``, no recipient at all, ...).
        """
        policy = _BUILD_POLICY_UTF8 if utf8 else _BUILD_POLICY
        try:
            return self._build(policy)
        except MailMessageError:
            raise
        except (ValueError, TypeError, LookupError) as exc:
            raise MailMessageError(f"cannot build the message: {exc}") from exc

    def as_bytes(self, *, utf8: bool = False) -> bytes:
        """The message as sent on the wire (CRLF line endings, 7-bit clean bodies).

        Raises:
            MailMessageError: see :meth:`to_email_message`.
        """
        message = self.to_email_message(utf8=utf8)
        try:
            return message.as_bytes(policy=message.policy)
        except (ValueError, TypeError, LookupError) as exc:
            raise MailMessageError(f"cannot serialise the message: {exc}") from exc

    def _build(self, policy: email.policy.EmailPolicy[EmailMessage]) -> EmailMessage:
        if not isinstance(self.subject, str):
            raise MailMessageError(f"subject must be str, not {type(self.subject).__name__}")
        if not isinstance(self.sender, str) or not self.sender:
            raise MailMessageError("sender must be a non-empty string")
        for att in self.attachments:
            if not isinstance(att, Attachment):
                raise MailMessageError(
                    f"attachments must be Attachment objects, not {type(att).__name__}"
                )
        for text, what in ((self.text_content, "text_content"), (self.html_content,
                                                                 "html_content")):
            if text is not None and not isinstance(text, str):
                raise MailMessageError(f"{what} must be str or None, not {type(text).__name__}")
        _addr_spec(self.sender, "sender")  # one valid address
        if not self.envelope_recipients:
            raise MailMessageError("the message has no recipient (recipients, cc, bcc are empty)")

        msg = EmailMessage(policy=policy)
        _check_line(self.subject, "subject")
        msg["Subject"] = self.subject
        msg["From"] = self.sender
        if self.recipients:
            msg["To"] = ", ".join(_address_list(self.recipients, "recipient"))
        if self.cc:
            msg["Cc"] = ", ".join(_address_list(self.cc, "cc"))
        if self.reply_to:
            _check_line(self.reply_to, "reply_to")
            msg["Reply-To"] = self.reply_to
        date = self.date if self.date is not None else _dt.datetime.now(_dt.UTC)
        msg["Date"] = email.utils.format_datetime(date)
        if self.message_id:
            _check_line(self.message_id, "message_id")
            msg["Message-ID"] = self.message_id
        for name, value in self.headers.items():
            if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
                raise MailMessageError(f"invalid header name {name!r}")
            if name.lower() in _OWN_HEADERS:
                raise MailMessageError(
                    f"header {name!r} is set from MailMessage's own fields; do not pass it in "
                    "headers"
                )
            if not isinstance(value, str):
                raise MailMessageError(f"header {name!r} must be a str value")
            _check_line(value, f"header {name!r}")
            msg[name] = value

        related = [a for a in self.attachments if a.content_id is not None]
        others = [a for a in self.attachments if a.content_id is None]
        if self.html_content is None:
            # nothing to relate to: Content-ID parts are ordinary (inline) attachments
            others = list(self.attachments)
            related = []

        if self.text_content is not None:
            msg.set_content(self.text_content, subtype="plain")
        if self.html_content is not None:
            if self.text_content is not None:
                msg.add_alternative(self.html_content, subtype="html")
                parts = msg.get_payload()
                assert isinstance(parts, list)
                html_part = parts[-1]
                assert isinstance(html_part, EmailMessage)
            else:
                msg.set_content(self.html_content, subtype="html")
                html_part = msg
            for att in related:
                att._add_to(html_part, related=True)
        if self.text_content is None and self.html_content is None and not others:
            msg.set_content("", subtype="plain")
        for att in others:
            att._add_to(msg, related=False)

        # EmailMessage puts MIME-Version into every part it creates; one at the top is the rule.
        for part in msg.walk():
            if part is not msg:
                del part["MIME-Version"]
        if "MIME-Version" not in msg:
            msg["MIME-Version"] = "1.0"
        return msg

    # -- parsing ---------------------------------------------------------------------------------

    @classmethod
    def parse(
        cls,
        raw: bytes | str | Message,
        *,
        uid: int | None = None,
        flags: Iterable[str] = (),
    ) -> MailMessage:
        """Parse a received message (RFC 5322 bytes) into a :class:`MailMessage`.

        The plain-text and HTML bodies are decoded with their declared charsets (an unknown or
        wrong charset is decoded as UTF-8 with replacement characters instead of failing), line
        endings become ``\\n``, and every other leaf part becomes an :class:`Attachment` with its
        decoded bytes, filename (RFC 2231 or RFC 2047), Content-ID and disposition.

        Args:
            raw: the message bytes (or an already parsed :class:`email.message.Message`).
            uid: the IMAP UID to record.
            flags: the IMAP flags to record.
        """
        if isinstance(raw, Message):
            message = raw
            raw_bytes = None
        else:
            raw_bytes = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
            message = message_from_bytes(raw_bytes)
        return _parse(cls, message, raw_bytes, uid, frozenset(flags))


def parse_message(
    raw: bytes | str | Message, *, uid: int | None = None, flags: Iterable[str] = ()
) -> MailMessage:
    """Parse a received message; the same as :meth:`MailMessage.parse`."""
    return MailMessage.parse(raw, uid=uid, flags=flags)


# -- parsing helpers ----------------------------------------------------------------------------
#
# Parsing uses the email package's compat32 policy, whose headers are plain strings: the header
# objects of the modern policy cost ~0.1 ms each to build, which made parsing a small message
# ~20x slower. The decoding the modern policy would do is done here, only where needed.

_FOLD: Final = re.compile(r"\r?\n(?=[ \t])")
_SPECIALS: Final = frozenset('()<>@,:;."[]\\')


def _clean(value: object) -> str:
    """A header value as text: unfolded, RFC 2047 words decoded, raw UTF-8 bytes recovered."""
    if isinstance(value, email.header.Header):
        return str(value)
    text = str(value)
    if "\n" in text:
        text = _FOLD.sub("", text)
    if not text.isascii():
        # compat32 turns 8-bit header bytes into surrogates: they are most likely UTF-8
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _decode_words(text).strip()


def _decode_words(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


def _header_text(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return _clean(values[0]) if values else None


def _format_address(name: str, address: str) -> str:
    if not name:
        return address
    if any(ch in _SPECIALS for ch in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


_ATEXT: Final = r"[^\s@<>(),;:\"\[\]\\]+"
_BARE_ADDRESS: Final = re.compile(rf"\s*({_ATEXT}@{_ATEXT})\s*")
_NAMED_ADDRESS: Final = re.compile(rf"\s*([^<>\"(),;:@\\]*?)\s*<({_ATEXT}@{_ATEXT})>\s*")


def _addresses(fields: dict[str, list[str]], name: str) -> list[str]:
    values = fields.get(name)
    if not values:
        return []
    raw = [_FOLD.sub("", v) if "\n" in v else v for v in values]
    if len(raw) == 1:
        # the common single-address forms, without email.utils.getaddresses (slow since its
        # 2023 hardening parses everything twice)
        bare = _BARE_ADDRESS.fullmatch(raw[0])
        if bare is not None:
            return [_clean(bare.group(1))]
        named = _NAMED_ADDRESS.fullmatch(raw[0])
        if named is not None:
            return [_format_address(_clean(named.group(1)), _clean(named.group(2)))]
    out = []
    for display, address in email.utils.getaddresses(raw):
        if address:
            out.append(_format_address(_clean(display), _clean(address)))
    return out


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = content_charset(part) or "us-ascii"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = data.decode("utf-8", errors="replace")
    if charset.lower() in ("us-ascii", "ascii") and not data.isascii():
        # mislabelled 8-bit text: UTF-8 is the best guess
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _leaf_parts(message: Message) -> Iterator[tuple[Message, str]]:
    """Every non-multipart part with its content type, not descending into attached messages
    (message/rfc822)."""
    content_type = message.get_content_type()
    if content_type.startswith("multipart/"):
        payload = message.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from _leaf_parts(part)
        return
    yield message, content_type


def _part_filename(part: Message) -> str:
    filename = part.get_filename()
    if filename is None:
        name = part.get_param("name", header="Content-Type")
        if isinstance(name, tuple):
            filename = email.utils.collapse_rfc2231_value(name)
        elif isinstance(name, str):
            filename = email.utils.unquote(name)
    return _clean(filename) if filename else ""


def _part_bytes(part: Message, content_type: str) -> bytes:
    if content_type == "message/rfc822":
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0].as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _is_body_candidate(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return False
    return disposition is None or part.get_filename() is None


def _parse(
    cls: type[MailMessage],
    message: Message,
    raw: bytes | None,
    uid: int | None,
    flags: frozenset[str],
) -> MailMessage:
    leaves = list(_leaf_parts(message))
    # the bodies: the first inline text/plain and text/html parts (as get_body() would choose
    # for the usual mixed > alternative > related trees)
    text_part: Message | None = None
    html_part: Message | None = None
    for part, content_type in leaves:
        if content_type == "text/plain" and text_part is None and _is_body_candidate(part):
            text_part = part
        elif content_type == "text/html" and html_part is None and _is_body_candidate(part):
            html_part = part

    attachments: list[Attachment] = []
    for part, content_type in leaves:
        if part is text_part or part is html_part:
            continue
        if part is message and content_type.startswith("text/"):
            continue  # a single-part message whose body is neither plain nor html text
        content_id = part.get("Content-ID")
        cid = _clean(content_id).strip("<>") if content_id else None
        inline = part.get_content_disposition() == "inline"
        filename = _part_filename(part)
        content = _part_bytes(part, content_type)
        try:
            attachment = Attachment(
                filename, content, content_type, content_id=cid or None, inline=inline
            )
        except MailMessageError:  # a Content-ID we cannot represent: keep the part, not the id
            attachment = Attachment(filename, content, content_type, inline=inline)
        attachments.append(attachment)

    # one pass over the header fields: every value by lower-case name, and the fields that
    # MailMessage does not model itself (the first of each name), cleaned
    fields: dict[str, list[str]] = {}
    headers: dict[str, str] = {}
    for key, value in message.raw_items():
        name = key.lower()
        known = fields.get(name)
        if known is None:
            fields[name] = [str(value)]
        else:
            known.append(str(value))
        if name not in _OWN_HEADERS and key not in headers:
            headers[key] = _clean(value)

    date: _dt.datetime | None = None
    date_header = _header_text(fields, "date")
    if date_header is not None:
        try:
            date = date_from_header(date_header)
        except (ValueError, TypeError, IndexError):
            date = None

    reply_to = _addresses(fields, "reply-to")
    return cls(
        subject=_header_text(fields, "subject") or "",
        sender=(_addresses(fields, "from") or [_header_text(fields, "from") or ""])[0],
        recipients=_addresses(fields, "to"),
        text_content=_decoded_text(text_part) if text_part is not None else None,
        html_content=_decoded_text(html_part) if html_part is not None else None,
        attachments=attachments,
        cc=_addresses(fields, "cc"),
        bcc=_addresses(fields, "bcc"),
        reply_to=", ".join(reply_to) if reply_to else None,
        headers=headers,
        message_id=(_header_text(fields, "message-id") or "").strip(),
        date=date,
        uid=uid,
        flags=flags,
        raw=raw,
    )
