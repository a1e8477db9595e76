"""Routing through the in-process client: converters, 404/405/HEAD, mounts, url_for."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from trionet.asgi import (
    ASGIApplication,
    Mount,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    TestClient,
)
from trionet.errors import ASGIError


async def plain(request: Request) -> Response:
    return Response.text("plain")


def make_router() -> Router:
    router = Router()

    # The seed's example, verbatim apart from the imports.
    @router.route("/users/{user_id}")
    async def get_user(request, user_id: str):  # type: ignore[no-untyped-def]
        return Response.json({"user_id": user_id})

    @router.route("/users", methods=["POST"])
    async def create_user(request):  # type: ignore[no-untyped-def]
        data = await request.json()
        return Response.json(data, status_code=201)

    @router.route("/items/{item_id:int}")
    async def item(request: Request, item_id: int) -> Response:
        return Response.json({"item_id": item_id, "type": type(item_id).__name__})

    @router.route("/price/{value:float}")
    async def price(request: Request, value: float) -> Response:
        return Response.json({"value": value})

    @router.route("/files/{rest:path}")
    async def files(request: Request, rest: str) -> Response:
        return Response.text(rest)

    @router.route("/objects/{oid:uuid}", name="object")
    async def objects(request: Request, oid: uuid.UUID) -> Response:
        return Response.json({"hex": oid.hex, "url": str(request.url_for("object", oid=oid))})

    @router.route("/things", methods=["GET", "PUT"])
    async def things(request: Request) -> Response:
        return Response.text(f"{request.method} things")

    @router.route("/things", methods=["DELETE"])
    async def delete_things(request: Request) -> Response:
        return Response(None, 204)

    @router.route("/slash/")
    async def slash(request: Request) -> Response:
        return Response.text("slash")

    return router


async def test_seed_router_example_matches_path_parameters() -> None:
    # mtaio's Router answered 500 "No handler found" here: exact string matching only.
    async with TestClient(ASGIApplication(make_router())) as client:
        response = await client.get("/users/42")
        assert response.status_code == 200
        assert response.json() == {"user_id": "42"}
        response = await client.post("/users", json={"name": "ada"})
        assert response.status_code == 201
        assert response.json() == {"name": "ada"}


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/items/7", 200, {"item_id": 7, "type": "int"}),
        ("/items/x7", 404, None),
        ("/items/-1", 404, None),
        ("/price/2.5", 200, {"value": 2.5}),
        ("/price/3", 200, {"value": 3.0}),
    ],
)
async def test_typed_converters(path: str, status: int, body: Any) -> None:
    client = TestClient(ASGIApplication(make_router()))
    response = await client.get(path)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body


async def test_path_and_uuid_converters_and_url_for() -> None:
    client = TestClient(ASGIApplication(make_router()))
    response = await client.get("/files/a/b/c.txt")
    assert response.text == "a/b/c.txt"
    oid = uuid.uuid4()
    response = await client.get(f"/objects/{oid}")
    assert response.json() == {"hex": oid.hex, "url": f"http://testserver/objects/{oid}"}
    assert (await client.get("/objects/not-a-uuid")).status_code == 404


async def test_404_405_and_allow_header() -> None:
    client = TestClient(ASGIApplication(make_router()))
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    response = await client.post("/things")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PUT"
    assert (await client.put("/things")).text == "PUT things"
    response = await client.delete("/things")
    assert response.status_code == 204
    assert "content-length" not in response.headers


async def test_automatic_head_sends_headers_without_body() -> None:
    client = TestClient(ASGIApplication(make_router()))
    get = await client.get("/items/5")
    head = await client.head("/items/5")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    # POST-only routes do not get HEAD.
    assert (await client.head("/users")).status_code == 405


async def test_trailing_slash_redirect() -> None:
    client = TestClient(ASGIApplication(make_router()))
    response = await client.get("/slash?x=1")
    assert response.status_code == 307
    assert response.headers["location"] == "http://testserver/slash/?x=1"
    no_redirect = Router([Route("/a/", plain)], redirect_slashes=False)
    assert (await TestClient(no_redirect).get("/a")).status_code == 404


async def test_mounted_router_and_raw_asgi_app() -> None:
    api = Router()

    @api.route("/users/{user_id:int}", name="user")
    async def user(request: Request, user_id: int, **params: Any) -> Response:
        return Response.json(
            {
                "user_id": user_id,
                "params": request.path_params,
                "path": request.path,
                "root_path": request.root_path,
                "url": str(request.url_for("v1:user", version=2, user_id=5)),
            }
        )

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        body = f"{scope['root_path']}|{scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    router = Router([Mount("/v{version:int}", api, name="v1"), Mount("/raw", raw_app)])
    client = TestClient(router)
    response = await client.get("/v2/users/9")
    assert response.json() == {
        "user_id": 9,
        "params": {"version": 2, "user_id": 9},
        "path": "/v2/users/9",
        "root_path": "/v2",
        "url": "http://testserver/v2/users/5",
    }
    assert (await client.get("/raw/deep/path")).content == b"/raw|/raw/deep/path"
    assert (await client.get("/rawx")).status_code == 404
    assert router.url_for("v1:user", version=1, user_id=3) == "/v1/users/3"


def test_url_for_errors_and_pattern_validation() -> None:
    router = make_router()
    assert router.url_for("item", item_id=3) == "/items/3"
    assert router.url_for("files", rest="a b/c") == "/files/a%20b/c"
    with pytest.raises(ASGIError, match="no route named"):
        router.url_for("nope")
    with pytest.raises(ASGIError, match=r"takes path parameters \['item_id'\], got \[\]"):
        router.url_for("item")
    with pytest.raises(ASGIError, match="non-negative int"):
        router.url_for("item", item_id=-3)
    with pytest.raises(ValueError, match="unknown path converter"):
        router.add_route("/x/{a:nope}", plain)
    endpoint = plain
    with pytest.raises(ValueError, match="duplicate"):
        Router().add_route("/x/{a}/{a}", endpoint)
    with pytest.raises(ValueError, match="start with"):
        Router().add_route("x", endpoint)
    with pytest.raises(ValueError, match="unbalanced"):
        Router().add_route("/x/{a", endpoint)
    with pytest.raises(ValueError, match="cannot be '/'"):
        Router().mount("/", make_router())


async def test_custom_converter() -> None:
    class Hex:
        regex = "[0-9a-f]+"

        def to_python(self, value: str) -> int:
            return int(value, 16)

        def to_url(self, value: int) -> str:
            return format(value, "x")

    router = Router(converters={"hex": Hex()})

    @router.route("/color/{c:hex}")
    async def color(request: Request, c: int) -> Response:
        return Response.json(c)

    assert (await TestClient(router).get("/color/ff")).json() == 255
    assert router.url_for("color", c=255) == "/color/ff"


async def test_handler_returning_non_response_is_a_500() -> None:
    router = Router()

    @router.route("/bad")
    async def bad(request: Request) -> Response:
        return "not a response"  # type: ignore[return-value]

    client = TestClient(ASGIApplication(router), raise_app_exceptions=False)
    response = await client.get("/bad")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}


async def test_router_alone_is_an_asgi_app_with_lifespan() -> None:
    async with TestClient(make_router()) as client:
        assert (await client.get("/items/1")).status_code == 200
        assert (await client.get("/missing")).status_code == 404
