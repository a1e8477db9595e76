"""Host routing, the HTTPS redirect and per-route timeouts, checked with the test client."""

import trio

from trionet.asgi import (
    ASGIApplication,
    HTTPSRedirectMiddleware,
    Request,
    Response,
    Router,
    TestClient,
)

api = Router()


@api.route("/status")
async def api_status(request: Request) -> Response:
    return Response.json({"api": "up"})


@api.route("/report", timeout=0.05)  # this route gets 50 ms, whatever the others get
async def report(request: Request) -> Response:
    await trio.sleep(10)  # too slow: cancelled at the deadline, answered with 504
    return Response.text("never")


tenants = Router()


@tenants.route("/")
async def tenant_home(request: Request) -> Response:
    return Response.text(f"welcome to {request.path_params['tenant']}")


site = Router()
site.host("api.example.com", api, name="api")
site.host("{tenant}.shop.example.com", tenants)


@site.route("/")
async def home(request: Request) -> Response:  # every other host
    return Response.text("main site")


app = ASGIApplication(site)
app.add_middleware(HTTPSRedirectMiddleware)


async def main() -> None:
    async with TestClient(app, base_url="https://example.com") as client:
        print((await client.get("https://api.example.com/status")).json())
        print((await client.get("https://acme.shop.example.com/")).text)
        print((await client.get("https://www.example.com/")).text)
        slow = await client.get("https://api.example.com/report")
        print(slow.status_code, slow.json())
        plain = await client.get("http://api.example.com/status?verbose=1")
        print(plain.status_code, plain.headers["location"])
        assert plain.headers["location"] == "https://api.example.com/status?verbose=1"
        assert slow.status_code == 504
    print(site.url_for("api:api_status"))


if __name__ == "__main__":
    trio.run(main)
