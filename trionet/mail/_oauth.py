"""OAuth 2.0 for the mail clients: access tokens from a provider, cached and refreshed.

A *token provider* is an async callable that returns a fresh access token, as a ``str`` or as
an :class:`OAuth2Token` that also says when it expires. The clients call it when they log in
(and log in again after a reconnection), reuse the token while it is valid, and call it again
when the token is about to expire or the server refused it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from ..errors import ConfigurationError
from ._errors import InsecureAuthError, MailAuthenticationError
from ._transport import check_credential

__all__ = ["OAuth2Token", "TokenCache", "TokenProvider", "oauthbearer_bytes", "server_refused"]

#: A token this close (seconds) to its expiry is refreshed before it is used.
REFRESH_MARGIN: Final = 60.0


@dataclass(frozen=True)
class OAuth2Token:
    """An OAuth 2.0 access token and when it expires.

    Attributes:
        access_token: the token itself.
        expires_at: when it expires, in seconds since the epoch (``time.time()``), as an
            identity provider's ``expires_in`` plus the time it was issued; None if unknown
            (then it is refreshed only after the server refused it).
    """

    access_token: str
    expires_at: float | None = None


#: An async callable returning a new access token (``str`` or :class:`OAuth2Token`).
TokenProvider: TypeAlias = Callable[[], Awaitable["str | OAuth2Token"]]


class TokenCache:
    """The current token of one client, fetched from its provider when needed."""

    def __init__(self, provider: TokenProvider) -> None:
        if not callable(provider):
            raise ConfigurationError("a token provider must be an async callable")
        self._provider = provider
        self._token: OAuth2Token | None = None
        self.fetches = 0

    async def token(self) -> str:
        """A valid token: the cached one, or a new one from the provider."""
        cached = self._token
        if cached is not None and (
            cached.expires_at is None or cached.expires_at - REFRESH_MARGIN > time.time()
        ):
            return cached.access_token
        got = await self._provider()
        self.fetches += 1
        token = got if isinstance(got, OAuth2Token) else OAuth2Token(got)
        if not isinstance(token.access_token, str) or not token.access_token:
            raise ConfigurationError("the token provider returned no access token")
        check_credential(token.access_token, "access token")
        self._token = token
        return token.access_token

    def invalidate(self) -> None:
        """Forget the cached token (the server refused it): the next use fetches a new one."""
        self._token = None


def server_refused(exc: MailAuthenticationError) -> bool:
    """Whether the server itself refused the credentials (not a local refusal such as an
    unencrypted connection or a mechanism it does not offer)."""
    if isinstance(exc, InsecureAuthError) or exc.fault == "local":
        return False
    return getattr(exc, "code", 0) is not None


def oauthbearer_bytes(username: str, access_token: str) -> bytes:
    """The SASL OAUTHBEARER client response (RFC 7628): a GS2 header naming the user, then
    the bearer token."""
    name = username.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={name},\x01auth=Bearer {access_token}\x01\x01".encode()
