"""SessionMiddleware (signed cookies) and AuthenticationMiddleware with requires()."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from trionet.asgi import (
    ASGIApplication,
    AuthCredentials,
    AuthenticationError,
    AuthenticationMiddleware,
    BaseUser,
    HTTPConnection,
    Request,
    Response,
    Router,
    SessionMiddleware,
    SimpleUser,
    TestClient,
    WebSocket,
    WebSocketRejected,
    requires,
)
from trionet.asgi._sessions import MAX_COOKIE_SIZE, SessionSigner
from trionet.errors import ASGIError, ConfigurationError

SECRET = "k" * 32


def session_app(**kwargs: object) -> ASGIApplication:
    router = Router()

    @router.route("/count")
    async def count(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        return Response.json(request.session)

    @router.route("/show")
    async def show(request: Request) -> Response:
        return Response.json(request.session)

    @router.route("/logout")
    async def logout(request: Request) -> Response:
        request.session.clear()
        return Response.text("bye")

    @router.route("/huge")
    async def huge(request: Request) -> Response:
        request.session["blob"] = "x" * MAX_COOKIE_SIZE
        return Response.text("too big")

    app = ASGIApplication(router)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, **kwargs)
    return app


async def test_session_round_trip_and_cookie_attributes() -> None:
    async with TestClient(session_app()) as client:
        first = await client.get("/count")
        assert first.json() == {"n": 1}
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("session=")
        for attribute in ("Path=/", "Max-Age=1209600", "HttpOnly", "SameSite=Lax", "Secure"):
            assert attribute in cookie.split("; "), attribute
        assert (await client.get("/count")).json() == {"n": 2}
        # Nothing to store and nothing stored: no cookie at all.
        async with TestClient(session_app()) as fresh:
            assert "set-cookie" not in (await fresh.get("/show")).headers
        bye = await client.get("/logout")
        assert bye.headers["set-cookie"].startswith("session=; Max-Age=0")
        assert (await client.get("/show")).json() == {}


async def test_tampered_foreign_expired_and_oversize_cookies_give_an_empty_session() -> None:
    signer = SessionSigner(SECRET, max_age=60)
    good = signer.sign({"user": "ada"})
    payload, stamp, signature = good.split(".")
    forged_payload = base64.urlsafe_b64encode(json.dumps({"user": "root"}).encode()).decode()
    old_signed = f"{payload}.{0:x}"
    old_signature = SessionSigner._signature(signer.keys[0], old_signed)
    expired = old_signed + "." + base64.urlsafe_b64encode(old_signature).decode().rstrip("=")
    assert SessionSigner(SECRET, max_age=None).unsign(expired) == {"user": "ada"}
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    candidates = {
        "forged payload": f"{forged_payload.rstrip('=')}.{stamp}.{signature}",
        "flipped signature": f"{payload}.{stamp}.{flipped}",
        "other key": SessionSigner("z" * 32, max_age=60).sign({"user": "ada"}),
        # Correctly signed, but in 1970: older than max_age.
        "expired": expired,
        "garbage": "not-a-session",
        "bad base64": "@@@.@@@.@@@",
        "oversize": good + "A" * MAX_COOKIE_SIZE,
    }
    async with TestClient(session_app()) as client:
        assert (await client.get("/show", cookies={"session": good})).json() == {"user": "ada"}
        for name, value in candidates.items():
            response = await client.get("/show", cookies={"session": value})
            assert (response.status_code, response.json()) == (200, {}), name


async def test_key_rotation_limits_and_options(caplog: pytest.LogCaptureFixture) -> None:
    old_key, new_key = "o" * 32, "n" * 32
    value = SessionSigner(old_key, max_age=None).sign({"user": "ada"})
    rotated = SessionSigner([new_key, old_key], max_age=None)
    assert rotated.unsign(value) == {"user": "ada"}
    assert rotated.unsign(rotated.sign({"x": 1})) == {"x": 1}
    assert SessionSigner(old_key, max_age=None).unsign(rotated.sign({"x": 1})) is None
    with pytest.raises(ConfigurationError):
        SessionMiddleware(Router(), secret_key="short")
    with pytest.raises(ConfigurationError):
        SessionMiddleware(Router(), secret_key=SECRET, same_site="none", https_only=False)
    app = session_app(https_only=False, same_site="strict", max_age=None, session_cookie="sid")
    async with TestClient(app) as client:
        cookie = (await client.get("/count")).headers["set-cookie"]
        assert cookie.startswith("sid=")
        parts = cookie.split("; ")
        assert "SameSite=Strict" in parts and "Secure" not in parts
        assert not any(part.startswith("Max-Age") for part in parts)
    # A session that no longer fits a cookie is a loud 500 (and a logged error), not a cookie
    # the browser would silently drop.
    with caplog.at_level(logging.ERROR, logger="trionet.asgi"):
        async with TestClient(session_app()) as client:
            assert (await client.get("/huge")).status_code == 500
    assert any(isinstance(r.exc_info[1], ASGIError) and "too large" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info)


class TokenBackend:
    """Bearer tokens from a table; a session login as a fallback."""

    tokens = {
        "t-admin": ("alice", ["authenticated", "admin"]),
        "t-user": ("bob", ["authenticated"]),
    }

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            name = conn.session.get("user")
            return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            raise AuthenticationError("unknown token")
        user, scopes = self.tokens[token]
        return AuthCredentials(scopes), SimpleUser(user)


def auth_app() -> ASGIApplication:
    router = Router()

    @router.route("/me")
    async def me(request: Request) -> Response:
        return Response.json({"user": request.user.display_name,
                              "authenticated": request.user.is_authenticated,
                              "scopes": sorted(request.auth.scopes)})

    @router.route("/admin")
    @requires(["authenticated", "admin"])
    async def admin(request: Request) -> Response:
        return Response.text(f"hello admin {request.user.identity}")

    @router.route("/account/{section}")
    @requires("authenticated", redirect="/login")
    async def account(request: Request, section: str) -> Response:
        return Response.text(f"{section} of {request.user.display_name}")

    @router.route("/login", methods=["POST"])
    async def login(request: Request) -> Response:
        request.session["user"] = (await request.json())["user"]
        return Response.text("logged in")

    @router.websocket("/feed")
    @requires("admin")
    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"feed for {websocket.user.display_name}")
        await websocket.close()

    app = ASGIApplication(router)
    app.add_middleware(AuthenticationMiddleware, backend=TokenBackend())
    app.add_middleware(SessionMiddleware, secret_key=SECRET)
    return app


async def test_authentication_and_requires() -> None:
    admin = {"authorization": "Bearer t-admin"}
    user = {"authorization": "Bearer t-user"}
    async with TestClient(auth_app()) as client:
        anonymous = await client.get("/me")
        assert anonymous.json() == {"user": "", "authenticated": False, "scopes": []}
        assert (await client.get("/me", headers=admin)).json() == {
            "user": "alice", "authenticated": True, "scopes": ["admin", "authenticated"]
        }
        wrong = await client.get("/me", headers={"authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()) == (401, {"error": "unknown token"})
        assert (await client.get("/admin", headers=admin)).text == "hello admin alice"
        assert (await client.get("/admin", headers=user)).status_code == 403
        assert (await client.get("/admin")).status_code == 403
        redirect = await client.get("/account/billing?tab=2")
        assert redirect.status_code == 303
        assert redirect.headers["location"] == "/login?next=%2Faccount%2Fbilling%3Ftab%3D2"
        assert (await client.get("/account/billing", headers=user)).text == "billing of bob"
        # A session login works through the same backend.
        await client.post("/login", json={"user": "carol"})
        assert (await client.get("/account/profile")).text == "profile of carol"
        async with client.websocket_connect("/feed", headers=admin) as websocket:
            assert await websocket.receive() == "feed for alice"
        with pytest.raises(WebSocketRejected) as rejected:
            async with client.websocket_connect("/feed", headers=user):
                pass
        assert rejected.value.status_code == 403


async def test_missing_middleware_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()

    @router.route("/")
    async def index(request: Request) -> Response:
        return Response.text(str(request.user))

    with caplog.at_level(logging.ERROR, logger="trionet.asgi"):
        async with TestClient(ASGIApplication(router)) as client:
            assert (await client.get("/")).status_code == 500
    assert any("AuthenticationMiddleware" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info)
