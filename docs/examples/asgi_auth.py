"""Sessions in signed cookies, an authentication backend and requires()."""

import secrets

import trio

from trionet.asgi import (
    ASGIApplication,
    AuthCredentials,
    AuthenticationError,
    AuthenticationMiddleware,
    BaseUser,
    HTTPConnection,
    Request,
    Response,
    SessionMiddleware,
    SimpleUser,
    TestClient,
    requires,
)

# In production, load this from your secret store: every worker must use the same key.
SECRET_KEY = secrets.token_urlsafe(32)
API_KEYS = {"k-ops": ("ops-bot", ["authenticated", "admin"])}
PASSWORDS = {"ada": "correct horse"}  # a real app checks a salted hash


class Backend:
    """An API key in X-API-Key, or else the user logged in through the session."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        key = conn.headers.get("x-api-key")
        if key is not None:
            if key not in API_KEYS:
                raise AuthenticationError("unknown API key")  # 401
            name, scopes = API_KEYS[key]
            return AuthCredentials(scopes), SimpleUser(name)
        name = conn.session.get("user")
        if name is None:
            return None  # anonymous
        return AuthCredentials(["authenticated"]), SimpleUser(name)


app = ASGIApplication()
app.add_middleware(AuthenticationMiddleware, backend=Backend())
# Outermost, so that the backend can read the session. https_only=False only because this
# example talks plain HTTP to a host that is not localhost; keep the default (Secure) in
# production.
app.add_middleware(SessionMiddleware, secret_key=SECRET_KEY, https_only=False)


@app.route("/login", methods=["POST"])
async def login(request: Request) -> Response:
    form = await request.json()
    if PASSWORDS.get(form["user"]) != form["password"]:
        return Response.json({"error": "wrong user or password"}, 401)
    request.session["user"] = form["user"]
    return Response.json({"hello": form["user"]})


@app.route("/profile")
@requires("authenticated", redirect="/login-page")
async def profile(request: Request) -> Response:
    return Response.json({"user": request.user.display_name})


@app.route("/admin")
@requires(["authenticated", "admin"])  # 403 otherwise
async def admin(request: Request) -> Response:
    return Response.text(f"admin console for {request.user.identity}")


async def main() -> None:
    async with TestClient(app) as client:
        anonymous = await client.get("/profile")
        print(anonymous.status_code, anonymous.headers["location"])
        await client.post("/login", json={"user": "ada", "password": "correct horse"})
        print((await client.get("/profile")).json())  # the session cookie came back
        print((await client.get("/admin")).status_code)
        ops = await client.get("/admin", headers={"x-api-key": "k-ops"})
        print(ops.text)
        # A cookie the client changed is simply no session.
        value = client.cookies["session"]
        client.cookies["session"] = ("X" if value[0] != "X" else "Y") + value[1:]
        tampered = await client.get("/profile")
        print(tampered.status_code)
        assert (anonymous.status_code, ops.status_code, tampered.status_code) == (303, 200, 303)


if __name__ == "__main__":
    trio.run(main)
