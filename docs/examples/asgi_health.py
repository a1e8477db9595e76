"""Health checks: /healthz and /readyz for an ASGI app and the bus it runs.

Run it as a program to see the answers, or serve it: ``trionet serve asgi_health:app``.
"""

import shutil

import trio

from trionet.asgi import ASGIApplication, Health, Request, Response, TestClient
from trionet.bus import BusMessage, DistributedApplication

bus = DistributedApplication("memory://")
app = ASGIApplication()
health = Health(timeout=1.0)  # each check gets at most a second


@bus.application("orders/#")
async def orders(message: BusMessage) -> None:
    print("order:", message.text)


@app.on_startup
async def start_bus() -> None:
    # The bus runs in the application's nursery: it starts with the lifespan and stops with it.
    await app.nursery.start(bus.serve)


class PriceCache:
    """A component of your own: anything with a ``ready`` attribute can be checked."""

    def __init__(self) -> None:
        self.ready = False


prices = PriceCache()


def disk_has_room() -> bool | str:
    # A plain function runs in the event loop, so it must be quick; an async one may await.
    # Returning a string means "not ready, and here is why".
    free = shutil.disk_usage(".").free
    return free > 10 * 2**20 or f"only {free // 2**20} MiB free"


health.add_check("bus", bus)  # ready while every consumer is subscribed
health.add_check("prices", prices)
health.add_check("disk", disk_has_room)
health.add_routes(app)  # GET/HEAD /healthz and /readyz, plus the "http" lifespan check


@app.route("/price")
async def price(request: Request) -> Response:
    return Response.json({"widget": 2.5})


async def main() -> None:
    async with TestClient(app) as client:  # runs the lifespan: the bus starts
        live = await client.get("/healthz")
        print("healthz:", live.status_code, live.json())
        ready = await client.get("/readyz")
        print("readyz: ", ready.status_code, ready.json())
        assert ready.status_code == 503  # the price cache is still cold

        prices.ready = True
        ready = await client.get("/readyz")
        print("readyz: ", ready.status_code, ready.json()["status"])
        assert ready.status_code == 200

        health.begin_shutdown()  # on SIGTERM: leave the load balancer, finish what runs
        ready = await client.get("/readyz")
        print("readyz: ", ready.status_code, ready.json()["reason"])
        assert ready.status_code == 503


if __name__ == "__main__":
    trio.run(main)
