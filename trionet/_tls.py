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
from collections.abc import Callable
from typing import Any

import trio

from .errors import TLSError, TLSNotSpoken, TLSVerificationError
from .tls import (
    CertificateReloader,
    ServerTLSArgument,
    TLSArgument,
    client_context,
    server_context,
)

__all__ = ["PLAINTEXT_REASONS", "client_handshake", "client_tls", "server_tls_source",
           "translate_handshake_error"]

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


def client_tls(tls: TLSArgument, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The client context of ``tls=`` or of its older alias ``ssl_context=`` (not both)."""
    if ssl_context is not None:
        if tls is not None:
            raise TypeError("give tls= or ssl_context=, not both")
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {ssl_context!r}")
        return ssl_context
    return client_context(tls)


def server_tls_source(
    tls: ServerTLSArgument, ssl_context: ssl.SSLContext | None = None
) -> Callable[[], ssl.SSLContext] | None:
    """What a server calls per new connection for its context (None: plain TCP).

    *tls* is the server's ``tls=`` argument, *ssl_context* its older alias (not both); a
    :class:`~trionet.tls.CertificateReloader` gives its current context each time, so a
    reload reaches the next connection.
    """
    if ssl_context is not None:
        if tls is not None:
            raise TypeError("give tls= or ssl_context=, not both")
        tls = ssl_context
    if isinstance(tls, CertificateReloader):
        reloader = tls
        return lambda: reloader.context
    context = server_context(tls)
    if context is None:
        return None
    return lambda: context
