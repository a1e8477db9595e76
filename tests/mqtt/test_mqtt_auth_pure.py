"""The pure parts of MQTT 5 enhanced authentication: SCRAM against RFC 7677's published
example, the AUTH packet codec, SASLprep, and what untrusted broker bytes can do to them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, strategies as st

from trionet.mqtt import MAX_AUTH_DATA, Authenticator, ScramAuthenticator
from trionet.mqtt._auth import AuthPacket, decode_auth, encode_auth, saslprep

# RFC 7677 §3: user "user", password "pencil", client nonce "rOprNGfwEbeRWgbNEkqO"
RFC7677_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _at_server_first(**options: int) -> ScramAuthenticator:
    scram = ScramAuthenticator("user", "pencil", **options)  # type: ignore[arg-type]
    assert scram._start(RFC7677_NONCE) == b"n,,n=user,r=" + RFC7677_NONCE.encode()
    return scram


def test_scram_sha256_matches_rfc7677() -> None:
    scram = _at_server_first()
    assert isinstance(scram, Authenticator)
    assert scram.method == "SCRAM-SHA-256"
    assert scram.step(RFC7677_SERVER_FIRST) == RFC7677_CLIENT_FINAL
    scram.finish(RFC7677_SERVER_FINAL)


def test_a_wrong_or_missing_server_signature_fails_closed() -> None:
    wrong = b"v=" + b"A" * 43 + b"="
    for final in (wrong, None, b"", b"e=invalid-proof", b"x=1", b"v=***"):
        scram = _at_server_first()
        scram.step(RFC7677_SERVER_FIRST)
        with pytest.raises(ValueError):
            scram.finish(final)
    scram = _at_server_first()
    with pytest.raises(ValueError, match="before the SCRAM exchange was complete"):
        scram.finish(RFC7677_SERVER_FINAL)  # accepted without ever seeing our proof


def test_fresh_nonces_and_no_second_step() -> None:
    scram = ScramAuthenticator("user", "pencil", hash="SHA-512")
    assert scram.method == "SCRAM-SHA-512"
    assert scram.start() != scram.start()
    scram = _at_server_first()
    scram.step(RFC7677_SERVER_FIRST)
    with pytest.raises(ValueError, match="complete"):
        scram.step(RFC7677_SERVER_FIRST)


@pytest.mark.parametrize(
    ("server_first", "why"),
    [
        (b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "does not extend"),
        (b"r=another-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "does not extend"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=not*base64,i=4096", "base64"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096", "salt"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0", "iteration"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", "iteration"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x", "iteration"),
        (b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096", "lacks"),
        (b"m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "extension"),
        (b"e=unknown-user", "SCRAM error"),
        (b"r=rOprNGfwEbeRWgbNEkqO\xff", "ASCII"),
        (b"r=rOprNGfwEbeRWgbNEkqO\x01", "control"),
        (b"", "no SCRAM"),
        (None, "no SCRAM"),
        (b",,,", "malformed"),
    ],
)
def test_a_bad_server_first_message_is_refused(server_first: bytes | None, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        _at_server_first().step(server_first)


def test_the_iteration_count_is_bounded() -> None:
    # an untrusted broker could otherwise make the client spend minutes in PBKDF2
    huge = b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000000000"
    with pytest.raises(ValueError, match="max_iterations"):
        _at_server_first().step(huge)
    with pytest.raises(ValueError, match="max_iterations"):
        _at_server_first(max_iterations=4095).step(RFC7677_SERVER_FIRST)
    assert _at_server_first(max_iterations=4096).step(RFC7677_SERVER_FIRST) == (
        RFC7677_CLIENT_FINAL)


@given(st.binary(max_size=300))
def test_any_server_first_bytes_give_an_answer_or_a_value_error(data: bytes) -> None:
    scram = _at_server_first(max_iterations=64)
    with contextlib.suppress(ValueError):
        scram.step(data)


@given(st.binary(max_size=200))
def test_any_server_final_bytes_are_refused(data: bytes) -> None:
    scram = _at_server_first()
    scram.step(RFC7677_SERVER_FIRST)
    with pytest.raises(ValueError):
        scram.finish(data)


def test_user_names_are_escaped_and_prepared() -> None:
    scram = ScramAuthenticator("a,b=c", "pencil")
    assert scram._start("n0nce") == b"n,,n=a=2Cb=3Dc,r=n0nce"
    # RFC 4013 §3 examples
    assert saslprep("I\u00adX") == "IX"
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a"
    assert saslprep("\u2168") == "IX"
    for bad in ("\u0007", "\u0627\u0031"):
        with pytest.raises(ValueError):
            saslprep(bad)


# -- AUTH packets -------------------------------------------------------------------------------


def test_auth_packets_round_trip() -> None:
    raw = encode_auth(0x18, "SCRAM-SHA-256", b"\x00data")
    assert raw[0] == 0xF0
    assert decode_auth(raw[2:]) == AuthPacket(0x18, "SCRAM-SHA-256", b"\x00data")
    assert decode_auth(b"") == AuthPacket(0, None, None)
    assert decode_auth(b"\x18") == AuthPacket(0x18, None, None)
    # a reason string and user properties are allowed
    body = b"\x18" + bytes([3 + 4 + 9]) + b"\x15\x00\x01M" + b"\x1f\x00\x01R" + (
        b"\x26\x00\x01k\x00\x02vv")
    assert decode_auth(body) == AuthPacket(0x18, "M", None, "R")


@pytest.mark.parametrize(
    "body",
    [
        b"\x18\x05\x15\x00\x01M",  # property length beyond the packet
        b"\x18\x04\x15\x00\x05M",  # string beyond the properties
        b"\x18\x08\x15\x00\x01M\x15\x00\x01N",  # method twice
        b"\x18\x02\x01\x00",  # a property AUTH may not carry
        b"\x18\x04\x15\x00\x01\xff",  # not UTF-8
        b"\x18\xff\xff\xff\xff\x7f",  # a 5-byte variable byte integer
    ],
)
def test_malformed_auth_packets_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_auth(body)


def _body(raw: bytes) -> bytes:
    """An encoded packet without its fixed header."""
    pos = 1
    while raw[pos] & 0x80:
        pos += 1
    return raw[pos + 1:]


def test_auth_data_is_bounded() -> None:
    assert decode_auth(_body(encode_auth(0x18, "M", b"x" * MAX_AUTH_DATA))).data == (
        b"x" * MAX_AUTH_DATA)
    with pytest.raises(ValueError, match="limit"):
        decode_auth(_body(encode_auth(0x18, "M", b"x" * (MAX_AUTH_DATA + 1))))
    with pytest.raises(ValueError, match="limit"):  # refused before parsing
        decode_auth(b"\x18" + b"\x00" * (MAX_AUTH_DATA + 2000))


@given(st.binary(max_size=200))
def test_any_auth_bytes_decode_or_raise_value_error(body: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_auth(body)
