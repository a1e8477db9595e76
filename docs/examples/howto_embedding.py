"""Embedding trionet in your own trio program: one nursery, a service of your own, failures."""

import trio

from trionet.aproto import Server
from trionet.asgi import ASGIApplication, serve
from trionet.bus import BusMessage, DistributedApplication, SocketProvider, from_url


async def publish_heartbeats(
    provider: SocketProvider,
    interval: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A service of your own in trionet's shape: nursery.start() it, cancel it to stop it."""
    async with provider.create_socket(name="heartbeat") as socket:
        task_status.started()  # connected: nursery.start() returns now
        beat = 0
        while True:
            await socket.publish(BusMessage(str(beat), "heartbeat"))
            beat += 1
            await trio.sleep(interval)


async def one_nursery() -> None:
    provider = from_url("memory://embedding")
    bus = DistributedApplication(provider)
    beats: list[int] = []
    three = trio.Event()

    @bus.application("heartbeat")
    async def monitor(message: BusMessage) -> None:
        beats.append(int(message.text))
        if len(beats) == 3:
            three.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)  # the consumer is subscribed when this returns...
        await nursery.start(publish_heartbeats, provider, 0.01)  # ...so no beat is lost
        with trio.fail_after(5):
            await three.wait()
        print("heartbeats:", beats[:3])
        nursery.cancel_scope.cancel()  # stops both; the bus lets running handlers finish


async def failures() -> None:
    # A component that cannot start raises from nursery.start(), as a plain exception.
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(Server("127.0.0.1", port).serve)
            except OSError as exc:
                print("the AProto server could not start:", exc.strerror)

    # A component that fails later cancels its siblings (the HTTP server shuts down
    # gracefully), and its exception leaves the nursery in an ExceptionGroup. A bus handler
    # that raises is logged and skipped by default; on_error="raise" makes it fail the bus.
    provider = from_url("memory://failing")
    bus = DistributedApplication(provider)

    @bus.application("jobs", on_error="raise")
    async def worker(message: BusMessage) -> None:
        raise ValueError(f"cannot do {message.text!r}")

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.serve)
            await nursery.start(serve, ASGIApplication(), "127.0.0.1:0")
            async with provider.create_socket() as socket:
                await socket.publish(BusMessage("poison", "jobs"))
            await trio.sleep_forever()  # cancelled when the bus fails
    except* ValueError as group:
        print("the bus failed:", *group.exceptions)


async def main() -> None:
    await one_nursery()
    await failures()


if __name__ == "__main__":
    trio.run(main)
