"""The plain-library mail peers of ``bench/mail.py`` in their own process (no trionet).

``bench/mail.py`` starts one worker (``python bench/_mail_peers.py``), which first makes
importing trionet an error (``_bounds.forbid_trionet``), then reads one JSON job a line on
stdin and answers one JSON line on stdout:

* ``{"op": "setup", "targets": {name: {"host", "smtp_port", "imaps_port"}}, "ca_file",
  "alice": {"address", "password"}, "bob": {"address"}}`` -> ``{}``
* ``{"op": <peer>, "target": name, "mailbox": str, "count": n}`` -> ``{"ms": elapsed}``, where
  *peer* is ``smtplib_send``, ``imaplib_fetch``, ``imaplib_batched_fetch`` or
  ``threaded_fetch``; a failure answers ``{"error": text}``.

Each peer connects, logs in and logs out outside its timed part, as ``bench/mail.py``'s docstring
describes; the parse of every fetched message is the original's (compat32 + a walk).
"""

from __future__ import annotations

import contextlib
import email
import imaplib
import json
import os
import smtplib
import ssl
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import Any

import trio


@dataclass(frozen=True)
class Target:
    host: str
    smtp_port: int
    imaps_port: int


@dataclass(frozen=True)
class Setup:
    targets: dict[str, Target]
    ca_file: str
    alice: tuple[str, str]
    bob: str

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def smtplib_send(setup: Setup, target: Target, mailbox: str, count: int) -> float:
    alice, password = setup.alice
    with smtplib.SMTP(target.host, target.smtp_port, timeout=60) as smtp:
        smtp.starttls(context=setup.context())
        smtp.login(alice, password)
        start = time.perf_counter()
        for n in range(count):
            message = EmailMessage()
            message["Subject"] = f"bench smtplib {n}"
            message["From"] = alice
            message["To"] = setup.bob
            message.set_content(f"small message {n}\n")
            smtp.send_message(message)
        return _ms(start)


def original_parse(raw: bytes) -> dict[str, Any]:
    """What mtaio did with each fetched message: compat32 parse, then a walk over the parts."""
    message = email.message_from_bytes(raw)
    text = html = None
    attachments = []
    part: Message
    for part in message.walk():
        kind = part.get_content_type()
        payload = part.get_payload(decode=True)
        if kind == "text/plain" and isinstance(payload, bytes):
            text = payload.decode()
        elif kind == "text/html" and isinstance(payload, bytes):
            html = payload.decode()
        elif part.get_filename():
            attachments.append((part.get_filename(), payload))
    return {"subject": message.get("Subject", ""), "from": message.get("From", ""),
            "text": text, "html": html, "attachments": attachments}


def _imaplib_session(setup: Setup, target: Target, mailbox: str) -> imaplib.IMAP4_SSL:
    """Connected, logged in and ``mailbox`` selected; use it in ``with`` (imaplib's documented
    form: LOGOUT when the block ends)."""
    imap = imaplib.IMAP4_SSL(target.host, target.imaps_port, ssl_context=setup.context())
    with contextlib.ExitStack() as failed:
        failed.enter_context(imap)  # logs out if the login or the select fails
        imap.login(*setup.alice)
        imap.select(f'"{mailbox}"')
        failed.pop_all()
    return imap


def imaplib_fetch(setup: Setup, target: Target, mailbox: str, count: int) -> float:
    with _imaplib_session(setup, target, mailbox) as imap:
        start = time.perf_counter()
        _, found = imap.search(None, "ALL")
        parsed = []
        for number in found[0].split():
            _, data = imap.fetch(number.decode(), "(RFC822)")
            part = data[0]
            assert isinstance(part, tuple)
            parsed.append(original_parse(part[1]))
        elapsed = _ms(start)
    assert len(parsed) == count
    return elapsed


def imaplib_batched_fetch(setup: Setup, target: Target, mailbox: str, count: int) -> float:
    """Plain imaplib at its best: one UID SEARCH, one UID FETCH for every message."""
    with _imaplib_session(setup, target, mailbox) as imap:
        start = time.perf_counter()
        _, found = imap.uid("SEARCH", None, "ALL")
        uids = b",".join(found[0].split()).decode()
        _, data = imap.uid("FETCH", uids, "(BODY.PEEK[])")
        parsed = [original_parse(part[1]) for part in data if isinstance(part, tuple)]
        elapsed = _ms(start)
    assert len(parsed) == count
    return elapsed


def threaded_fetch(setup: Setup, target: Target, mailbox: str, count: int) -> float:
    """The original's shape: every FETCH is its own thread hop (asyncio.to_thread there)."""

    async def main() -> float:
        imap = await trio.to_thread.run_sync(_imaplib_session, setup, target, mailbox)
        try:
            start = time.perf_counter()
            _, found = await trio.to_thread.run_sync(imap.search, None, "ALL")
            parsed = []
            for number in found[0].split():
                _, data = await trio.to_thread.run_sync(imap.fetch, number.decode(), "(RFC822)")
                part = data[0]
                assert isinstance(part, tuple)
                parsed.append(original_parse(part[1]))
            elapsed = _ms(start)
        finally:
            await trio.to_thread.run_sync(imap.__exit__, None, None, None)  # as ``with`` does
        assert len(parsed) == count
        return elapsed

    return trio.run(main)


PEERS: dict[str, Callable[[Setup, Target, str, int], float]] = {
    "smtplib_send": smtplib_send,
    "imaplib_fetch": imaplib_fetch,
    "imaplib_batched_fetch": imaplib_batched_fetch,
    "threaded_fetch": threaded_fetch,
}


def _answer(job: dict[str, Any], setup: Setup | None) -> tuple[dict[str, Any], Setup | None]:
    if job["op"] == "setup":
        targets = {name: Target(t["host"], int(t["smtp_port"]), int(t["imaps_port"]))
                   for name, t in job["targets"].items()}
        alice = job["alice"]
        return {}, Setup(targets, job["ca_file"], (alice["address"], alice["password"]),
                         job["bob"]["address"])
    assert setup is not None, "setup first"
    peer = PEERS[job["op"]]
    return {"ms": peer(setup, setup.targets[job["target"]], job["mailbox"],
                       int(job["count"]))}, setup


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _bounds import forbid_trionet

    forbid_trionet()  # a peer's process: checked, not just claimed
    setup: Setup | None = None
    for line in sys.stdin:
        try:
            answer, setup = _answer(json.loads(line), setup)
        except Exception as exc:  # reported to bench/mail.py, which fails the row
            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
