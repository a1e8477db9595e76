"""``send()``: one message in one call (connect, TLS, log in, send, QUIT), aiosmtplib's shape."""

from __future__ import annotations

import math

import trio

from ..errors import ConfigurationError
from ..tls import TLSArgument
from ._message import MailMessage
from ._oauth import TokenProvider
from ._smtp import AsyncSMTPClient
from ._transport import Address
from ._types import SendResult

__all__ = ["send"]


async def send(
    message: MailMessage,
    /,
    *,
    hostname: str = "localhost",
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    oauth2_token: str | TokenProvider | None = None,
    use_tls: bool | None = None,
    start_tls: bool | None = None,
    tls: TLSArgument = None,
    local_hostname: str | None = None,
    source_address: Address | None = None,
    timeout: float | None = 60.0,  # noqa: ASYNC109 - aiosmtplib's send() has it
    allow_insecure_auth: bool = False,
) -> SendResult:
    """Send one message: connect, set up TLS, log in if asked, send, say QUIT.

    ::

        result = await send(message, hostname="smtp.example.com",
                            username="me@example.com", password="secret")

    Secure by default: the connection is upgraded with STARTTLS whenever the server offers it
    (or uses TLS from the first byte with ``use_tls=True`` or on port 465), the certificate
    and host name are verified, and a password or token is never sent over a connection that
    is not encrypted (:exc:`InsecureAuthError`) unless ``allow_insecure_auth=True``.

    Args:
        message: the :class:`MailMessage`; it goes to its To, Cc and Bcc recipients.
        hostname: the SMTP server.
        port: default 465 with ``use_tls=True``, else 587 (submission).
        username: log in as this user (with ``password`` or ``oauth2_token``).
        password: the password (``AUTH PLAIN``, or ``LOGIN`` if PLAIN is not offered).
        oauth2_token: an OAuth 2.0 access token or token provider (``AUTH XOAUTH2``), as for
            :meth:`AsyncSMTPClient.login_oauth2`.
        use_tls: implicit TLS from the first byte (default: only on port 465).
        start_tls: None (default): STARTTLS when offered; True: require it; False: never.
        tls: the TLS settings, in the ``tls=`` vocabulary of :mod:`trionet.tls`: None or True
            for the system's CAs, an :class:`ssl.SSLContext`, a :class:`~trionet.tls.TLSOptions`
            (a private CA, a client certificate); False for no TLS at all (no STARTTLS).
        local_hostname: the name sent with EHLO.
        source_address: a local ``(address, port)`` to connect from.
        timeout: the whole call's deadline in seconds (None: none); when it passes,
            :exc:`trio.TooSlowError` is raised and the connection closed.
        allow_insecure_auth: send credentials over an unencrypted connection (a trusted
            network only).

    Returns:
        The :class:`SendResult` (recipients the server refused while it accepted others are
        in :attr:`SendResult.refused`).

    Raises:
        SMTPRecipientsRefused: every recipient was refused.
        SMTPAuthenticationError: the login was refused.
        InsecureAuthError: credentials and no encryption (see above).
        SMTPConnectionError: the server could not be reached or dropped the connection.
        SMTPResponseError: the server refused the sender or the message.
        trio.TooSlowError: ``timeout`` passed.
    """
    if password is not None and oauth2_token is not None:
        raise ConfigurationError("give send() a password or an oauth2_token, not both")
    if (password is None and oauth2_token is None) != (username is None):
        raise ConfigurationError("send() needs a username with a password or an oauth2_token")
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number or None, not {timeout!r}")
    if port is None:
        port = 465 if use_tls else 587
    with trio.fail_after(math.inf if timeout is None else timeout):
        async with AsyncSMTPClient(local_hostname=local_hostname,
                                   allow_insecure_auth=allow_insecure_auth) as client:
            await client.connect(hostname, port, use_tls=use_tls, start_tls=start_tls,
                                 source_address=source_address, tls=tls)
            if oauth2_token is not None:
                assert username is not None
                await client.login_oauth2(username, oauth2_token)
            elif username is not None and password is not None:
                await client.login(username, password)
            return await client.send_message(message)
