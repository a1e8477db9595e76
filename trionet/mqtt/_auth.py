"""MQTT 5 enhanced authentication: the :class:`Authenticator` protocol, SCRAM, and the AUTH
packet codec (no paho, no I/O).

An exchange (MQTT 5 §4.12): the client names a method and sends its first data in CONNECT; the
broker answers with AUTH packets (reason 0x18, "continue authentication") that the client
answers with AUTH packets of its own, until the broker sends CONNACK (success carries the
broker's last data, which the client checks). During a connection the client may start again
with AUTH reason 0x19 ("re-authenticate"); the broker then ends the exchange with AUTH reason
0x00 instead of a CONNACK.

Every byte the broker sends here is untrusted: an AUTH packet is parsed by :func:`decode_auth`
(bounded: :data:`MAX_AUTH_DATA` bytes of data, :data:`MAX_AUTH_ROUNDS` packets per exchange;
the client's ``connect_timeout`` bounds the time), and :class:`ScramAuthenticator` checks every
field of the broker's messages and the broker's signature (fail closed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "AUTH",
    "CONTINUE_AUTHENTICATION",
    "MAX_AUTH_DATA",
    "MAX_AUTH_ROUNDS",
    "REAUTHENTICATE",
    "AuthPacket",
    "Authenticator",
    "ScramAuthenticator",
    "decode_auth",
    "encode_auth",
    "saslprep",
]

#: MQTT control packet type of AUTH (upper nibble of the fixed header's first byte).
AUTH: Final = 0xF0
#: AUTH reason codes (MQTT 5 §3.15.2.1).
SUCCESS: Final = 0x00
CONTINUE_AUTHENTICATION: Final = 0x18
REAUTHENTICATE: Final = 0x19
#: The most authentication data the client accepts from the broker in one packet (bytes).
MAX_AUTH_DATA: Final = 16384
#: The most AUTH packets the client accepts from the broker in one exchange.
MAX_AUTH_ROUNDS: Final = 10
#: CONNACK / DISCONNECT reason codes that mean "authentication failed".
AUTH_FAILURES: Final = frozenset({0x86, 0x87, 0x8C})

_METHOD: Final = 0x15
_DATA: Final = 0x16
_REASON_STRING: Final = 0x1F
_USER_PROPERTY: Final = 0x26


@runtime_checkable
class Authenticator(Protocol):
    """One MQTT 5 enhanced-authentication method, on the client's side.

    Pass one to :class:`~trionet.mqtt.MQTTClient` as ``authenticator=``. The client calls
    :meth:`start` for every connection attempt (and for :meth:`MQTTClient.reauthenticate
    <trionet.mqtt.MQTTClient.reauthenticate>`), :meth:`step` for every AUTH packet the broker
    sends during that exchange, and :meth:`finish` with the broker's last data (from the
    CONNACK, or from the AUTH packet that ends a re-authentication).

    The methods are synchronous and must be quick, pure computation (no I/O, no waiting):
    they run where the client's protocol engine runs, on the client's network thread (with
    ``backend="trio"``: on the trio thread, and :meth:`start` for a connection attempt on the
    worker thread that connects), never two at once. Give each client its own authenticator
    (it holds the state of one exchange). Raising any exception fails the exchange: the
    connection attempt (or the re-authentication) fails with
    :exc:`~trionet.mqtt.MQTTAuthError` and nothing more is sent.

    Attributes:
        method: the Authentication Method the broker knows the method by (for example
            ``"SCRAM-SHA-256"``).
    """

    @property
    def method(self) -> str: ...

    def start(self) -> bytes | None:
        """Begin a new exchange (forget any earlier one); the data for CONNECT (or for the
        AUTH packet that starts a re-authentication), or None for none."""
        ...

    def step(self, server_data: bytes | None) -> bytes | None:
        """Answer the broker's data from an AUTH packet ("continue authentication")."""
        ...

    def finish(self, server_data: bytes | None) -> None:
        """The broker accepted: check its final data (raise if it does not prove anything the
        method requires it to prove)."""
        ...


# -- AUTH packets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthPacket:
    """A decoded AUTH packet."""

    reason_code: int
    method: str | None
    data: bytes | None
    reason_string: str | None = None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_auth(reason_code: int, method: str, data: bytes | None) -> bytes:
    """The bytes of an AUTH packet (fixed header included) with the method and data."""
    raw_method = method.encode()
    props = bytearray((_METHOD,)) + len(raw_method).to_bytes(2, "big") + raw_method
    if data is not None:
        if len(data) > 0xFFFF:
            raise ValueError("authentication data must be at most 65535 bytes")
        props += bytes((_DATA,)) + len(data).to_bytes(2, "big") + data
    body = bytes((reason_code,)) + _varint(len(props)) + props
    return bytes((AUTH,)) + _varint(len(body)) + body


def _read_varint(body: bytes | bytearray, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 28, 7):
        if pos >= len(body):
            raise ValueError("truncated variable byte integer")
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ValueError("variable byte integer longer than 4 bytes")


def _read_bytes(body: bytes | bytearray, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise ValueError("truncated length")
    size = int.from_bytes(body[pos:pos + 2], "big")
    pos += 2
    if pos + size > end:
        raise ValueError("truncated field")
    return bytes(body[pos:pos + size]), pos + size


def _read_text(body: bytes | bytearray, pos: int, end: int) -> tuple[str, int]:
    raw, pos = _read_bytes(body, pos, end)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a string is not UTF-8") from None
    if "\x00" in text:
        raise ValueError("a string contains U+0000")
    return text, pos


def decode_auth(body: bytes | bytearray) -> AuthPacket:
    """Decode the variable header of an AUTH packet (everything after the fixed header).

    Raises:
        ValueError: the packet is malformed, carries a property AUTH may not carry, repeats
            one, or has more than :data:`MAX_AUTH_DATA` bytes of data.
    """
    if not body:
        return AuthPacket(SUCCESS, None, None)
    if len(body) > MAX_AUTH_DATA + 1024:
        raise ValueError(f"an AUTH packet of {len(body)} bytes (the limit is "
                         f"{MAX_AUTH_DATA} bytes of authentication data)")
    reason = body[0]
    if len(body) == 1:
        return AuthPacket(reason, None, None)
    size, pos = _read_varint(body, 1)
    end = pos + size
    if end != len(body):
        raise ValueError("the property length does not match the packet")
    method: str | None = None
    data: bytes | None = None
    reason_string: str | None = None
    while pos < end:
        ident = body[pos]
        pos += 1
        if ident == _METHOD and method is None:
            method, pos = _read_text(body, pos, end)
        elif ident == _DATA and data is None:
            data, pos = _read_bytes(body, pos, end)
            if len(data) > MAX_AUTH_DATA:
                raise ValueError(f"{len(data)} bytes of authentication data (the limit is "
                                 f"{MAX_AUTH_DATA})")
        elif ident == _REASON_STRING and reason_string is None:
            reason_string, pos = _read_text(body, pos, end)
        elif ident == _USER_PROPERTY:
            _, pos = _read_text(body, pos, end)
            _, pos = _read_text(body, pos, end)
        else:
            raise ValueError(f"property 0x{ident:02x} is not allowed (or repeated) in AUTH")
    return AuthPacket(reason, method, data, reason_string)


# -- SCRAM (RFC 5802, RFC 7677) ----------------------------------------------------------------


def saslprep(text: str) -> str:
    """Prepare a user name or password for SCRAM (SASLprep, RFC 4013, for stored strings).

    Raises:
        ValueError: the text holds a prohibited or unassigned character, or breaks the
            bidirectional rules.
    """
    if text.isascii() and text.isprintable():
        return text  # (nothing in printable ASCII is mapped or prohibited)
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    for c in prepared:
        if (stringprep.in_table_c12(c) or stringprep.in_table_c21_c22(c)
                or stringprep.in_table_c3(c) or stringprep.in_table_c4(c)
                or stringprep.in_table_c5(c) or stringprep.in_table_c6(c)
                or stringprep.in_table_c7(c) or stringprep.in_table_c8(c)
                or stringprep.in_table_c9(c) or stringprep.in_table_a1(c)):
            raise ValueError(f"SASLprep forbids the character U+{ord(c):04X}")
    if any(stringprep.in_table_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            raise ValueError("SASLprep: mixed right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("SASLprep: right-to-left text must begin and end with it")
    return prepared


def _attributes(message: bytes, kind: str) -> list[tuple[str, str]]:
    """Split a SCRAM message into ``(letter, value)`` pairs (printable ASCII only)."""
    try:
        text = message.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"the {kind} message is not ASCII") from None
    if not text.isprintable():
        raise ValueError(f"the {kind} message holds control characters")
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise ValueError(f"the {kind} message is malformed")
        out.append((part[0], part[2:]))
    return out


class ScramAuthenticator:
    """SCRAM-SHA-256 or SCRAM-SHA-512 (RFC 5802, RFC 7677) as an MQTT 5 enhanced-authentication
    method, as EMQX and other brokers offer it::

        client = MQTTClient(protocol=5, tls=True,
                            authenticator=ScramAuthenticator("alice", "s3cret"))

    The password never leaves the client: the broker gets a proof that the client knows it,
    and must itself prove that it knows the salted password (its signature in the CONNACK is
    checked with :func:`hmac.compare_digest`; a missing or wrong one fails the connection).
    Each exchange uses a fresh client nonce from :mod:`secrets`. Give each client its own
    instance (it holds the state of the exchange in progress). The salted password is
    computed once per salt and iteration count (RFC 5802 §5.1 allows caching it), so
    reconnects and re-authentications do not repeat the key derivation.

    The broker's messages are checked before use: its nonce must extend ours, the salt must be
    base64, the iteration count an integer from 1 to *max_iterations* (a malicious broker could
    otherwise make the client spend minutes in PBKDF2), and an ``m=`` (mandatory extension) or
    ``e=`` (server error) attribute fails the exchange.

    Args:
        username: the user name (prepared with SASLprep).
        password: the password (prepared with SASLprep).
        hash: ``"SHA-256"`` (default) or ``"SHA-512"``.
        max_iterations: the highest PBKDF2 iteration count accepted from the broker.

    Raises:
        ConfigurationError: an unknown hash, or a user name or password SASLprep refuses.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        hash: Literal["SHA-256", "SHA-512"] = "SHA-256",
        max_iterations: int = 100_000,
    ) -> None:
        if hash not in ("SHA-256", "SHA-512"):
            raise ConfigurationError(f"hash must be 'SHA-256' or 'SHA-512', not {hash!r}")
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ConfigurationError("max_iterations must be an int >= 1")
        try:
            user = saslprep(username)
            self._password = saslprep(password).encode()
        except ValueError as exc:
            raise ConfigurationError(f"SCRAM credentials: {exc}") from None
        if not user:
            raise ConfigurationError("SCRAM needs a user name")
        self._user = user.replace("=", "=3D").replace(",", "=2C")
        self._digest = "sha256" if hash == "SHA-256" else "sha512"
        self._size = hashlib.new(self._digest).digest_size
        self._method = f"SCRAM-{hash}"
        self.max_iterations = max_iterations
        self._salted: dict[tuple[bytes, int], bytes] = {}
        self._state: Literal["idle", "first", "final", "done"] = "idle"
        self._nonce = ""
        self._first_bare = ""
        self._expected = b""

    def __repr__(self) -> str:
        return f"ScramAuthenticator(method={self._method!r})"  # never the password

    @property
    def method(self) -> str:
        """``"SCRAM-SHA-256"`` or ``"SCRAM-SHA-512"``."""
        return self._method

    def start(self) -> bytes:
        """The client-first message (``n,,n=user,r=nonce``) with a fresh nonce."""
        return self._start(secrets.token_urlsafe(24))

    def _start(self, nonce: str) -> bytes:
        self._nonce = nonce
        self._first_bare = f"n={self._user},r={nonce}"
        self._state = "first"
        self._expected = b""
        return f"n,,{self._first_bare}".encode()

    def step(self, server_data: bytes | None) -> bytes:
        """Answer the server-first message with the client-final message (the proof)."""
        if self._state != "first":
            self._state = "idle"
            raise ValueError("the broker continued a SCRAM exchange that was complete")
        self._state = "idle"
        if not server_data:
            raise ValueError("the broker sent no SCRAM server-first message")
        fields = _attributes(server_data, "SCRAM server-first")
        letters = [letter for letter, _ in fields]
        if letters[:1] == ["m"]:
            raise ValueError("the broker requires a SCRAM extension this client lacks")
        if letters[:1] == ["e"]:
            raise ValueError(f"the broker reported a SCRAM error: {fields[0][1][:100]}")
        if letters[:3] != ["r", "s", "i"]:
            raise ValueError("the SCRAM server-first message lacks r=, s= or i=")
        nonce, salt_b64, count = fields[0][1], fields[1][1], fields[2][1]
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ValueError("the broker's SCRAM nonce does not extend the client's")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
        except ValueError:
            raise ValueError("the SCRAM salt is not base64") from None
        if not salt:
            raise ValueError("the SCRAM salt is empty")
        if not count.isdigit() or len(count) > 10 or not 1 <= int(count) <= self.max_iterations:
            raise ValueError(f"the SCRAM iteration count {count[:12]!r} is not an integer from "
                             f"1 to {self.max_iterations} (max_iterations)")
        salted = self._salted_password(salt, int(count))
        without_proof = f"c=biws,r={nonce}"
        auth_message = (f"{self._first_bare},{server_data.decode('ascii')},"
                        f"{without_proof}").encode()
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self._digest, client_key).digest()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._expected = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        self._state = "final"
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def finish(self, server_data: bytes | None) -> None:
        """Check the server-final message (``v=`` the broker's signature)."""
        expected, state = self._expected, self._state
        self._state, self._expected = "idle", b""
        if state != "final":
            raise ValueError("the broker accepted before the SCRAM exchange was complete")
        if not server_data:
            raise ValueError("the broker sent no SCRAM server signature")
        fields = _attributes(server_data, "SCRAM server-final")
        if fields[0][0] == "e":
            raise ValueError(f"the broker reported a SCRAM error: {fields[0][1][:100]}")
        if fields[0][0] != "v":
            raise ValueError("the SCRAM server-final message has no v= signature")
        try:
            signature = base64.b64decode(fields[0][1], validate=True)
        except ValueError:
            raise ValueError("the SCRAM server signature is not base64") from None
        if not hmac.compare_digest(signature, expected):
            raise ValueError("the broker's SCRAM signature is wrong: it does not know the "
                             "password (an impostor, or a misconfigured broker)")
        self._state = "done"

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.digest(key, message, self._digest)

    def _salted_password(self, salt: bytes, iterations: int) -> bytes:
        key = (salt, iterations)
        salted = self._salted.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac(self._digest, self._password, salt, iterations,
                                         self._size)
            if len(self._salted) >= 4:
                self._salted.clear()
            self._salted[key] = salted
        return salted
