"""Tutorial, step 1: an HTTP service served by Hypercorn's trio worker inside our own nursery."""

import httpx
import trio

from trionet.asgi import ASGIApplication, Request, Response, Router, serve

router = Router()


@router.route("/greet/{lang}/{name}")
async def greet(request: Request, lang: str, name: str) -> Response:
    return Response.json({"greeting": f"hello {name}", "lang": lang})


app = ASGIApplication(router)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        # Port 0: any free port. nursery.start returns once the server accepts connections.
        address = await nursery.start(serve, app, "127.0.0.1:0")
        print("HTTP on", address.url)

        async with httpx.AsyncClient(base_url=address.url) as client:
            response = await client.get("/greet/en/trio")
            print(response.status_code, response.json())
            assert response.json() == {"greeting": "hello trio", "lang": "en"}

        nursery.cancel_scope.cancel()  # graceful: in-flight requests finish first


if __name__ == "__main__":
    trio.run(main)
