"""trionet in a background thread of a program that is not async (a script, a GUI, a WSGI app)."""

import queue
import threading
from typing import Any

import trio

from trionet import rpc


class Calculator:
    router = rpc.Service()

    @rpc.expose
    def add(self, a: int, b: int) -> int:
        return a + b


def main() -> None:
    started: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.CancelScope, Any]] = queue.Queue()

    async def run_servers() -> None:
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), Calculator())
            started.put((trio.lowlevel.current_trio_token(), nursery.cancel_scope, address))

    thread = threading.Thread(target=trio.run, args=(run_servers,), name="trio")
    thread.start()
    token, servers, address = started.get(timeout=10)
    try:
        # Blocking code calls into the trio thread through trio.from_thread.

        async def add(a: int, b: int) -> int:
            async with rpc.open_connection(address) as client:
                result: int = await client.remote.add(a, b)
                return result

        print("1 + 2 =", trio.from_thread.run(add, 1, 2, trio_token=token))
    finally:
        trio.from_thread.run_sync(servers.cancel, trio_token=token)  # stop the servers...
        thread.join()  # ...and trio.run returns: no thread is left behind


if __name__ == "__main__":
    main()
