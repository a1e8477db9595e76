"""Sans-I/O pieces of the IMAP client: UID sets, mailbox names, and parsers for the responses
imaplib hands back unparsed (FETCH, LIST, response codes, IDLE updates).

imaplib returns an untagged response as ``bytes`` (the line without ``"* "`` and, for numbered
responses, with the number first: ``b'12 (UID 7 FLAGS (\\\\Seen) ...'``), or, when the line ends
in a literal ``{n}``, as a tuple ``(line, literal_bytes)`` followed by the rest of the line as
another item. Nothing here does I/O or imports trio.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from ._errors import IMAPProtocolError, MailMessageError

__all__ = [
    "FetchedItem",
    "IdleEvent",
    "MailboxInfo",
    "MailboxStatus",
    "ResponseItem",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "format_uid_set",
    "parse_fetch_responses",
    "parse_list_response",
    "parse_uid_set",
    "quote_string",
    "split_response_code",
]

#: One item of imaplib's response data: a line, or a (line ending in ``{n}``, literal) pair.
ResponseItem: TypeAlias = bytes | tuple[bytes, bytes]

# A parsed IMAP value: an atom/number/quoted string (str), a literal (bytes), NIL (None) or a
# parenthesised list.
Value: TypeAlias = "str | bytes | list[Value] | None"


# -- UID sets -----------------------------------------------------------------------------------


def format_uid_set(uids: Iterable[int]) -> str:
    """Format UIDs as a compact IMAP sequence set: ``[1, 2, 3, 7, 9, 10]`` -> ``"1:3,7,9:10"``.

    Raises:
        MailMessageError: no UID was given, or one is not a positive integer.
    """
    values = set()
    for uid in uids:
        if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
            raise MailMessageError(f"a UID must be a positive int, not {uid!r}")
        values.add(uid)
    if not values:
        raise MailMessageError("no UID given")
    ordered = sorted(values)
    ranges: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    ranges.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(ranges)


def parse_uid_set(text: str) -> list[int]:
    """Expand an IMAP sequence set of UIDs (``"3:5,9"`` -> ``[3, 4, 5, 9]``); ``*`` is refused.

    Raises:
        IMAPProtocolError: the set is malformed.
    """
    out: list[int] = []
    for piece in text.strip().split(","):
        first, sep, last = piece.partition(":")
        try:
            a = int(first)
            b = int(last) if sep else a
        except ValueError:
            raise IMAPProtocolError(f"malformed UID set {text!r}") from None
        step = 1 if b >= a else -1
        out.extend(range(a, b + step, step))
    return out


# -- mailbox names (RFC 3501 section 5.1.3, "modified UTF-7") -----------------------------------


def _b64_utf16(chars: str) -> str:
    data = base64.b64encode(chars.encode("utf-16-be")).rstrip(b"=")
    return "&" + data.replace(b"/", b",").decode("ascii") + "-"


def encode_mailbox_name(name: str) -> str:
    """Encode a mailbox name in IMAP's modified UTF-7 (``"Entwürfe"`` -> ``"Entw&APw-rfe"``)."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if " " <= ch <= "~":
            if pending:
                out.append(_b64_utf16("".join(pending)))
                pending.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_b64_utf16("".join(pending)))
    return "".join(out)


_UTF7_RUN: Final = re.compile(r"&([^-]*)-")


def decode_mailbox_name(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; a malformed one is returned unchanged."""
    if "&" not in name:
        return name

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        data = body.replace(",", "/")
        data += "=" * (-len(data) % 4)
        return base64.b64decode(data, validate=True).decode("utf-16-be")

    try:
        return _UTF7_RUN.sub(replace, name)
    except (ValueError, UnicodeDecodeError):
        return name


def quote_string(text: str) -> str:
    """An IMAP quoted string: ``a "b"`` -> ``"a \\"b\\""``.

    Raises:
        MailMessageError: the text contains a line break or NUL (it would need a literal).
    """
    if any(ch in text for ch in "\r\n\0"):
        raise MailMessageError(f"{text!r} contains a line break or NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- a small tokenizer for IMAP data ------------------------------------------------------------

#: The deepest nesting of parenthesised lists accepted in a response (real ones nest a few
#: levels; a server sending thousands of "(" gets IMAPProtocolError, not a RecursionError).
MAX_NESTING: Final = 100


class _Parser:
    """Parses IMAP values from text interleaved with literals (given as bytes objects)."""

    def __init__(self, segments: Sequence[str | bytes]) -> None:
        self.segments = list(segments)
        self.seg = 0
        self.pos = 0
        self.depth = 0

    def _text(self) -> str | None:
        while self.seg < len(self.segments):
            current = self.segments[self.seg]
            if isinstance(current, bytes):
                return None
            if self.pos < len(current):
                return current
            self.seg += 1
            self.pos = 0
        return None

    def at_end(self) -> bool:
        self._skip_spaces()
        return self.seg >= len(self.segments)

    def _skip_spaces(self) -> None:
        while True:
            text = self._text()
            if text is None:
                return
            while self.pos < len(text) and text[self.pos] == " ":
                self.pos += 1
            if self.pos < len(text):
                return

    def value(self) -> Value:
        self._skip_spaces()
        if self.seg >= len(self.segments):
            raise IMAPProtocolError("unexpected end of response")
        current = self.segments[self.seg]
        if isinstance(current, bytes):  # a literal
            self.seg += 1
            self.pos = 0
            return current
        ch = current[self.pos]
        if ch == "(":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise IMAPProtocolError(
                    f"response lists nested deeper than {MAX_NESTING} levels"
                )
            self.pos += 1
            items: list[Value] = []
            while True:
                self._skip_spaces()
                text = self._text()
                if text is not None and text[self.pos] == ")":
                    self.pos += 1
                    self.depth -= 1
                    return items
                if self.seg >= len(self.segments):
                    raise IMAPProtocolError("unterminated list in response")
                items.append(self.value())
        if ch == '"':
            return self._quoted(current)
        if ch == "{":
            # the literal's announcement; the literal itself is the next segment
            end = current.find("}", self.pos)
            if end < 0 or end != len(current) - 1:
                raise IMAPProtocolError(f"malformed literal announcement in {current!r}")
            self.pos = len(current)
            self.seg += 1
            self.pos = 0
            if self.seg >= len(self.segments) or not isinstance(self.segments[self.seg], bytes):
                raise IMAPProtocolError("literal announced but missing")
            return self.value()
        return self._atom(current)

    def _quoted(self, text: str) -> str:
        out: list[str] = []
        i = self.pos + 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                self.pos = i + 1
                return "".join(out)
            out.append(ch)
            i += 1
        raise IMAPProtocolError(f"unterminated quoted string in {text!r}")

    def _atom(self, text: str) -> str | None:
        start = i = self.pos
        depth = 0
        while i < len(text):
            ch = text[i]
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth = max(0, depth - 1)
            elif depth == 0 and ch in " ()":
                break
            i += 1
        self.pos = i
        atom = text[start:i]
        if not atom:
            raise IMAPProtocolError(f"unexpected {text[i:i + 1]!r} in response {text!r}")
        return None if atom.upper() == "NIL" else atom


def _segments(items: Sequence[ResponseItem]) -> list[str | bytes]:
    out: list[str | bytes] = []
    for item in items:
        if isinstance(item, tuple):
            line, literal = item
            out.append(line.decode("utf-8", "surrogateescape"))
            out.append(literal)
        else:
            out.append(item.decode("utf-8", "surrogateescape"))
    return out


def _group_responses(data: Sequence[ResponseItem | None]) -> list[list[ResponseItem]]:
    """Split imaplib's list into responses: a new one starts with a line beginning with a digit;
    the rest of a line after a literal starts with a space or ``)``."""
    groups: list[list[ResponseItem]] = []
    for item in data:
        if item is None:
            continue
        line = item[0] if isinstance(item, tuple) else item
        if line[:1].isdigit() or not groups:
            groups.append([item])
        else:
            groups[-1].append(item)
    return groups


# -- FETCH --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedItem:
    """One FETCH response, reduced to what the client uses.

    Attributes:
        sequence: the message sequence number.
        uid: the UID (None if the response did not carry one, e.g. an unsolicited flag update).
        flags: the flags, if the response carried them.
        body: the ``BODY[]`` (or ``RFC822``) bytes, if the response carried them.
    """

    sequence: int
    uid: int | None
    flags: frozenset[str] | None
    body: bytes | None


def _as_int(value: Value, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise IMAPProtocolError(f"{what} is not a number: {value!r}")


def parse_fetch_responses(data: Sequence[ResponseItem | None]) -> list[FetchedItem]:
    """Parse the FETCH data imaplib returns (``IMAP4.uid("FETCH", ...)[1]``).

    Raises:
        IMAPProtocolError: a response is malformed.
    """
    out: list[FetchedItem] = []
    for group in _group_responses(data):
        item = _simple_fetch(group)
        out.append(_parse_fetch(group) if item is None else item)
    return out


# The response to the client's own ``UID FETCH ... (UID FLAGS BODY.PEEK[])`` as servers send it:
# ``12 (UID 7 FLAGS (\Seen $Label) BODY[] {379}``, the literal, then ``)``. Flags here are plain
# atoms (none starts with ``(``, ``"``, ``{``, none holds a bracket) separated by single spaces.
_SIMPLE_FETCH: Final = re.compile(
    rb"([0-9]+) \(UID ([0-9]+) FLAGS \(([^ ()\"{\[\]]+(?: [^ ()\"{\[\]]+)*)?\) "
    rb"(?:BODY\[\]|RFC822|BINARY\[\]) \{[0-9]+\}"
)


def _simple_fetch(group: list[ResponseItem]) -> FetchedItem | None:
    """A response of the usual shape (above) read with one regular expression; None for any
    other, which :func:`_parse_fetch` reads token by token (tests check that both agree)."""
    if len(group) != 2 or group[1] != b")" or not isinstance(group[0], tuple):
        return None
    line, body = group[0]
    match = _SIMPLE_FETCH.fullmatch(line)
    if match is None:
        return None
    sequence, uid, flag_list = match.groups()
    flags = (
        frozenset(
            flag
            for flag in flag_list.decode("utf-8", "surrogateescape").split(" ")
            if flag.upper() != "NIL"  # the atom NIL is no flag
        )
        if flag_list
        else frozenset()
    )
    return FetchedItem(int(sequence), int(uid), flags, body)


def _parse_fetch(group: list[ResponseItem]) -> FetchedItem:
    """One FETCH response, any shape, token by token."""
    parser = _Parser(_segments(group))
    sequence = _as_int(parser.value(), "message sequence number")
    attributes = parser.value()
    if not isinstance(attributes, list) or len(attributes) % 2:
        raise IMAPProtocolError(f"malformed FETCH response for message {sequence}")
    uid: int | None = None
    flags: frozenset[str] | None = None
    body: bytes | None = None
    for key, value in zip(attributes[::2], attributes[1::2], strict=True):
        name = key.upper() if isinstance(key, str) else ""
        if name == "UID":
            uid = _as_int(value, "UID")
        elif name == "FLAGS":
            if not isinstance(value, list):
                raise IMAPProtocolError(f"FLAGS is not a list: {value!r}")
            flags = frozenset(str(flag) for flag in value if isinstance(flag, str))
        elif name in ("BODY[]", "RFC822", "BINARY[]"):
            if isinstance(value, str):
                value = value.encode("utf-8", "surrogateescape")
            body = value if isinstance(value, bytes) else None
    return FetchedItem(sequence, uid, flags, body)


# -- LIST ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxInfo:
    """One mailbox returned by :meth:`AsyncIMAPClient.list_mailboxes`.

    Attributes:
        name: the mailbox name, decoded from modified UTF-7 (pass it back as is).
        flags: its attributes, e.g. ``{"\\\\HasNoChildren", "\\\\Sent"}``.
        delimiter: the hierarchy delimiter (``"."`` or ``"/"``), None for a flat namespace.
    """

    name: str
    flags: frozenset[str]
    delimiter: str | None

    @property
    def selectable(self) -> bool:
        """False for a ``\\Noselect`` / ``\\NonExistent`` container."""
        return not {"\\noselect", "\\nonexistent"} & {flag.lower() for flag in self.flags}


def parse_list_response(data: Sequence[ResponseItem | None]) -> list[MailboxInfo]:
    """Parse LIST data (``(\\\\HasNoChildren) "." INBOX`` per mailbox).

    Raises:
        IMAPProtocolError: a response is malformed.
    """
    out: list[MailboxInfo] = []
    groups: list[list[ResponseItem]] = []
    for item in data:
        if item is None:
            continue
        line = item[0] if isinstance(item, tuple) else item
        if line[:1] == b"(" or not groups:
            groups.append([item])
        else:
            groups[-1].append(item)
    for group in groups:
        parser = _Parser(_segments(group))
        flags = parser.value()
        delimiter = parser.value()
        name = parser.value()
        if not isinstance(flags, list) or isinstance(delimiter, list) or name is None or (
            isinstance(name, list)
        ):
            raise IMAPProtocolError(f"malformed LIST response {group!r}")
        if isinstance(delimiter, bytes):
            delimiter = delimiter.decode("utf-8", "replace")
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        out.append(
            MailboxInfo(
                decode_mailbox_name(name),
                frozenset(f for f in flags if isinstance(f, str)),
                delimiter,
            )
        )
    return out


# -- status of a selected mailbox ---------------------------------------------------------------


@dataclass(frozen=True)
class MailboxStatus:
    """What SELECT reported about the mailbox (see :meth:`AsyncIMAPClient.select_mailbox`).

    Attributes:
        name: the mailbox name.
        exists: the number of messages.
        recent: the number of messages with the ``\\Recent`` flag.
        uidvalidity: the UIDVALIDITY value: UIDs stay valid as long as it does not change.
        uidnext: the UID the next message will get (None if the server did not say).
        flags: the flags defined in the mailbox.
        readonly: whether the mailbox was opened read-only.
    """

    name: str
    exists: int
    recent: int
    uidvalidity: int | None
    uidnext: int | None
    flags: frozenset[str]
    readonly: bool


# -- response codes and IDLE --------------------------------------------------------------------

_RESPONSE_CODE: Final = re.compile(r"\[([A-Za-z0-9.-]+)(?: ([^\]]*))?\]\s*(.*)", re.S)


def split_response_code(text: str) -> tuple[str | None, str | None, str]:
    """``"[TRYCREATE] No such mailbox"`` -> ``("TRYCREATE", None, "No such mailbox")``."""
    match = _RESPONSE_CODE.match(text.strip())
    if match is None:
        return None, None, text.strip()
    return match.group(1).upper(), match.group(2), match.group(3)


IdleKind: TypeAlias = Literal["exists", "expunge", "recent", "fetch", "reconnected"]


@dataclass(frozen=True)
class IdleEvent:
    """A change reported while idling (see :meth:`AsyncIMAPClient.idle`).

    Attributes:
        kind: ``"exists"`` (the mailbox now holds ``number`` messages: new mail),
            ``"expunge"`` (message ``number`` was removed), ``"recent"``, ``"fetch"`` (flags of
            message ``number`` changed), or ``"reconnected"`` (the server said BYE or dropped
            the connection, and the client logged in and selected the mailbox again; changes in
            between were not reported, so look at the mailbox).
        number: the count or sequence number the server gave (None for ``"reconnected"``).
        raw: the server's response, e.g. ``b"5 EXISTS"``.
    """

    kind: IdleKind
    number: int | None = None
    raw: bytes = b""
