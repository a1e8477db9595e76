"""Client-side TLS handshakes whose failures say what went wrong.

trio reports a failed handshake as :class:`trio.BrokenResourceError` with an empty message and
the :mod:`ssl` error in ``__cause__``. :func:`client_handshake` turns the common cases into
errors a person can act on: :class:`~trionet.errors.TLSVerificationError` (the certificate is not
trusted or is for another host), :class:`~trionet.errors.TLSNotSpoken` (the server answered in
plain text) and :class:`~trionet.errors.TLSError` for the rest. Each is still a
``trio.BrokenResourceError``.
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

from .errors import TLSError, TLSNotSpoken, TLSVerificationError

__all__ = ["PLAINTEXT_REASONS", "client_handshake", "translate_handshake_error"]

# OpenSSL's reasons for "the bytes that came back are not TLS records".
PLAINTEXT_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST",
                                "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"})


def translate_handshake_error(exc: BaseException, host: str | None) -> TLSError | None:
    """The trionet error for a failed client handshake, or ``None`` if *exc* is not one.

    *exc* is what ``SSLStream.do_handshake()`` raised (its ``__cause__`` holds the
    :mod:`ssl` error) or the :mod:`ssl` error itself.
    """
    cause: BaseException | None = exc
    if isinstance(exc, trio.BrokenResourceError):
        cause = exc.__cause__
    who = f"{host!r}" if host else "the server"
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or cause.reason or str(cause)
        return TLSVerificationError(
            f"the TLS certificate of {who} could not be verified: {reason} (give the client "
            "a context that trusts the server's CA, or connect by the name in its certificate)",
            host=host,
        )
    if isinstance(cause, ssl.SSLError) and cause.reason in PLAINTEXT_REASONS:
        return TLSNotSpoken(
            f"{who} does not speak TLS on this port (it answered the TLS handshake in plain "
            f"text, ssl: {cause.reason}): connect without TLS, or give the server a certificate",
            host=host,
        )
    if isinstance(exc, trio.BrokenResourceError):
        if cause is None:
            detail = "the connection closed during the handshake"
        else:
            detail = str(cause) or type(cause).__name__
        return TLSError(f"the TLS handshake with {who} failed: {detail}", host=host)
    return None


async def client_handshake(stream: trio.SSLStream[Any], host: str | None) -> None:
    """Run *stream*'s handshake; on failure close it and raise a :class:`TLSError`."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        error = translate_handshake_error(exc, host)
        if error is None:  # pragma: no cover - translate handles every BrokenResourceError
            raise
        raise error from exc.__cause__ or exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
