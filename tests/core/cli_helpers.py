"""A trionet command running in a subprocess, for the CLI tests (imported as ``cli_helpers``)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import trio

#: Every wait on a command is under this cap (a hang fails instead of stalling the run).
PATIENCE = 60


class Command:
    """A ``python -m trionet ...`` subprocess; all its output (stdout and stderr) in
    :attr:`output`."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = ""

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match[str]:
        """Read output until *pattern* matches (from offset *start*); the match."""
        assert self.process.stdout is not None
        with trio.fail_after(PATIENCE):
            while (found := re.compile(pattern).search(self.output, start)) is None:
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"the command ended before {pattern!r}:\n{self.output}")
                self.output += chunk.decode(errors="replace")
        return found

    async def finish(self) -> int:
        """Read the rest of the output; the exit status."""
        assert self.process.stdout is not None
        with trio.fail_after(PATIENCE):
            async for chunk in self.process.stdout:
                self.output += chunk.decode(errors="replace")
            return await self.process.wait()

    async def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        """Send *signum*, then :meth:`finish`."""
        self.process.send_signal(signum)
        return await self.finish()


async def start_command(nursery: trio.Nursery, args: list[str], *, cwd: Path,
                        env: Mapping[str, str], python_flags: tuple[str, ...] = ()
                        ) -> Command:
    """Start ``python -u [python_flags] -m trionet ARGS`` in *cwd* with *env*."""
    process: trio.Process = await nursery.start(partial(
        trio.run_process, [sys.executable, "-u", *python_flags, "-m", "trionet", *args],
        cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
    ))
    return Command(process)
