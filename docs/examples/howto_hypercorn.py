"""Serve howto_hypercorn_app.py from the command line, use it, then stop it as Ctrl+C would.

It runs the two commands of the how-to in turn::

    hypercorn --worker-class trio --bind 127.0.0.1:0 howto_hypercorn_app:app
    trionet serve howto_hypercorn_app:app --bind 127.0.0.1:0
"""

import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import trio

HERE = Path(__file__).resolve().parent
APP = "howto_hypercorn_app:app"
COMMANDS = {
    "hypercorn": ["-m", "hypercorn", "--worker-class", "trio", "--bind", "127.0.0.1:0", APP],
    "trionet serve": ["-m", "trionet", "serve", APP, "--bind", "127.0.0.1:0"],
}
LISTENING = re.compile(rb"(http://127\.0\.0\.1:\d+)")  # both print the URL they listen on


async def serve_and_use(name: str, arguments: list[str]) -> None:
    command = [sys.executable, *arguments]
    run = partial(trio.run_process, command, cwd=HERE, stderr=subprocess.PIPE, check=False)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(run)
            assert process.stderr is not None
            output = b""
            while not (found := LISTENING.search(output)):
                chunk = await process.stderr.receive_some()
                if not chunk:
                    raise RuntimeError(f"{name} exited early:\n{output.decode()}")
                output += chunk
            async with httpx.AsyncClient(base_url=found.group(1).decode()) as client:
                response = await client.get("/greet/en/hypercorn")
            print(f"{name}: {response.status_code} {response.json()}")
            assert response.json() == {"greeting": "hello hypercorn"}
            process.send_signal(signal.SIGINT)  # Ctrl+C: a graceful shutdown
            async for chunk in process.stderr:
                output += chunk
    print(f"{name}: exited with status {process.returncode}")
    assert process.returncode == 0, output.decode()


async def main() -> None:
    for name, arguments in COMMANDS.items():
        await serve_and_use(name, arguments)


if __name__ == "__main__":
    trio.run(main)
