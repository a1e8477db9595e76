"""Sessions in signed cookies: :class:`SessionMiddleware`.

The session is a JSON object kept in the client's cookie, signed with HMAC-SHA256 under a key
derived from the application's secret, so the client can read it (it is not encrypted: keep
secrets out of it) but not change it. A cookie that is too large, malformed, expired, signed
with another key or tampered with in any byte gives an empty session, never an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

from ..errors import ASGIError, ConfigurationError
from ._datastructures import Headers, parse_cookie_header
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_COOKIE_SIZE", "SessionMiddleware"]

logger = logging.getLogger("trionet.asgi")

#: The largest session cookie value read or written (browsers keep 4096 bytes per cookie,
#: name and attributes included).
MAX_COOKIE_SIZE = 4000
_MIN_KEY_BYTES = 16
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < _MIN_KEY_BYTES:
        raise ConfigurationError(
            f"a session secret_key needs at least {_MIN_KEY_BYTES} bytes "
            "(generate one with secrets.token_urlsafe(32))"
        )
    # A key of its own for session cookies, so the application's secret can sign other things.
    return hmac.new(raw, b"trionet.asgi.session.v1", hashlib.sha256).digest()


class SessionSigner:
    """Signs and checks session cookie values (``payload.timestamp.signature``, base64url).

    Args:
        secret_key: the key, or several: the first signs, every one is accepted (rotation).
        max_age: seconds a signed value stays valid (``None``: no limit).
    """

    def __init__(self, secret_key: str | bytes | Sequence[str | bytes], max_age: int | None
                 ) -> None:
        keys = [secret_key] if isinstance(secret_key, str | bytes) else list(secret_key)
        if not keys:
            raise ConfigurationError("SessionMiddleware needs a secret_key")
        self.keys = [_derive(key) for key in keys]
        self.max_age = max_age

    @staticmethod
    def _signature(key: bytes, signed: str) -> bytes:
        return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()

    def sign(self, data: dict[str, Any]) -> str:
        """The cookie value for ``data``."""
        payload = _b64encode(_ENCODER.encode(data).encode("ascii"))
        signed = f"{payload}.{int(time.time()):x}"
        return f"{signed}.{_b64encode(self._signature(self.keys[0], signed))}"

    def unsign(self, value: str) -> dict[str, Any] | None:
        """The session in ``value``, or ``None`` if it is not one this signer made and still
        valid."""
        if len(value) > MAX_COOKIE_SIZE or value.count(".") != 2:
            return None
        signed, _, signature_text = value.rpartition(".")
        try:
            signature = _b64decode(signature_text)
        except (binascii.Error, ValueError):
            return None
        if not any(
            hmac.compare_digest(signature, self._signature(key, signed)) for key in self.keys
        ):
            return None
        payload, _, stamp = signed.partition(".")
        try:
            issued = int(stamp, 16)
            data = json.loads(_b64decode(payload))
        except (binascii.Error, ValueError):
            return None
        if self.max_age is not None and time.time() - issued > self.max_age:
            return None
        return data if isinstance(data, dict) else None


class SessionMiddleware:
    """Keeps ``request.session`` (a ``dict``) in a signed cookie.

    Read and change ``request.session`` (or ``websocket.session``) in a handler; the cookie is
    sent again with every HTTP response while the session is not empty (which also renews its
    ``max_age``), and deleted when the session was emptied. Values must be JSON-serialisable.
    The session is signed, not encrypted: the client can read it.

    Defaults for the cookie: ``HttpOnly`` always, ``SameSite=Lax``, ``Secure`` (sent over
    HTTPS only; pass ``https_only=False`` to develop over plain HTTP on another host than
    ``localhost``), ``Path=/``, 14 days.

    Args:
        app: the wrapped application.
        secret_key: the application's secret (at least 16 bytes), or a list of them: the first
            signs, all are accepted, so a key can be rotated without logging everyone out.
        session_cookie: the cookie's name.
        max_age: seconds a session lives without a response renewing it (``None``: until the
            browser closes; the signature then has no age limit either).
        path: the cookie's ``Path``.
        same_site: the cookie's ``SameSite``.
        https_only: mark the cookie ``Secure``.
        domain: the cookie's ``Domain``, if any.

    Raises:
        ConfigurationError: no key, or a key under 16 bytes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret_key: str | bytes | Sequence[str | bytes],
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 3600,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = True,
        domain: str | None = None,
    ) -> None:
        if same_site not in ("lax", "strict", "none"):
            raise ConfigurationError(f"same_site must be lax, strict or none, got {same_site!r}")
        if same_site == "none" and not https_only:
            raise ConfigurationError("browsers accept SameSite=None only with Secure (https_only)")
        self.app = app
        self.signer = SessionSigner(secret_key, max_age)
        self.session_cookie = session_cookie
        self.max_age = max_age
        attributes = [f"Path={path}"]
        if max_age is not None:
            attributes.append(f"Max-Age={max_age}")
        if domain is not None:
            attributes.append(f"Domain={domain}")
        attributes += ["HttpOnly", f"SameSite={same_site.capitalize()}"]
        if https_only:
            attributes.append("Secure")
        self._attributes = "; ".join(attributes)
        expired = [a for a in attributes if not a.startswith("Max-Age=")]
        self._delete = (
            f"{session_cookie}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
            + "; ".join(expired)
        ).encode("latin-1")

    def _load(self, scope: Scope) -> tuple[dict[str, Any], bool]:
        value: str | None = None
        for header in Headers(raw=scope.get("headers", [])).getlist("cookie"):
            value = parse_cookie_header(header).get(self.session_cookie, value)
        if value is None:
            return {}, False
        data = self.signer.unsign(value)
        return (data if data is not None else {}), True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Load the session into the scope; write it back with the response."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session, had_cookie = self._load(scope)
        scope["session"] = session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                header = self._set_cookie(scope.get("session"), had_cookie)
                if header is not None:
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", header)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _set_cookie(self, session: Any, had_cookie: bool) -> bytes | None:
        if session:
            if not isinstance(session, dict):
                raise ASGIError("request.session must stay a dict", fault="local")
            value = self.signer.sign(session)
            if len(value) > MAX_COOKIE_SIZE:
                raise ASGIError(
                    f"the session is too large for a cookie ({len(value)} bytes signed, at "
                    f"most {MAX_COOKIE_SIZE}): keep large data server-side and an id in it",
                    fault="local",
                )
            return f"{self.session_cookie}={value}; {self._attributes}".encode("latin-1")
        if had_cookie:
            return self._delete
        return None
