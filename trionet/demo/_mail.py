"""``trionet demo --only mail``: send a message with an attachment over SMTP and read it back
over IMAP, against servers the user names (``--smtp`` and ``--imap`` URLs)."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import trio

from ..errors import ConfigurationError
from ..mail import AsyncIMAPClient, AsyncSMTPClient, Attachment, MailMessage

__all__ = ["MailServerURL", "demo", "parse_mail_url"]

_DEFAULT_PORTS = {"smtp": 587, "smtps": 465, "imap": 143, "imaps": 993}


@dataclass(frozen=True)
class MailServerURL:
    """A mail server as ``smtp[s]://user:password@host:port`` or ``imap[s]://…``."""

    scheme: str
    host: str
    port: int
    username: str
    password: str

    @property
    def implicit_tls(self) -> bool:
        return self.scheme.endswith("s")


def parse_mail_url(url: str, kind: str) -> MailServerURL:
    """Parse an SMTP (*kind* ``"smtp"``) or IMAP (``"imap"``) URL with its credentials.

    Raises:
        ConfigurationError: another scheme, no host, or no user name and password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"invalid {kind.upper()} URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in (kind, f"{kind}s"):
        raise ConfigurationError(
            f"expected {kind}://USER:PASSWORD@HOST:PORT (or {kind}s:// for implicit TLS), "
            f"got {url!r}"
        )
    if not parts.hostname:
        raise ConfigurationError(f"no host in {url!r}")
    if parts.username is None or parts.password is None:
        raise ConfigurationError(f"{url!r} needs USER:PASSWORD@ (the mailbox to log in to)")
    return MailServerURL(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme],
                         unquote(parts.username), unquote(parts.password))


async def demo(report: Callable[[str], None], smtp_url: str, imap_url: str,
               ca_file: str | None = None) -> None:
    """Send one message with an attachment to the IMAP user's own address, then find it in the
    INBOX and read it back. TLS is verified (against *ca_file* when given); credentials only
    travel over TLS (implicit, or STARTTLS)."""
    smtp = parse_mail_url(smtp_url, "smtp")
    imap = parse_mail_url(imap_url, "imap")
    context = ssl.create_default_context(cafile=ca_file)
    address = imap.username if "@" in imap.username else f"{imap.username}@{imap.host}"
    tag = secrets.token_hex(4)
    message = MailMessage(
        subject=f"trionet demo {tag}",
        sender=address,
        recipients=[address],
        text_content="Sent by trionet demo: SMTP in, IMAP out, one trio program.",
        attachments=[Attachment("greeting.txt", b"hello from trio\n")],
    )
    async with AsyncSMTPClient() as client:
        await client.connect(smtp.host, smtp.port, use_tls=smtp.implicit_tls,
                             ssl_context=context)
        await client.login(smtp.username, smtp.password)
        await client.send_message(message)
    report(f"mail: sent {message.subject!r} with greeting.txt via {smtp.scheme}://"
           f"{smtp.host}:{smtp.port} (TLS: {'implicit' if smtp.implicit_tls else 'STARTTLS'})")
    async with AsyncIMAPClient() as client:
        await client.connect(imap.host, imap.port, use_tls=imap.implicit_tls,
                             ssl_context=context)
        await client.login(imap.username, imap.password)
        await client.select_mailbox("INBOX")
        with trio.fail_after(30):  # delivery is asynchronous: wait for the message to land
            # (IMAP IDLE would tell; a short poll keeps the demo simple)
            while not (uids := await client.search(f'SUBJECT "{message.subject}"')):  # noqa: ASYNC110
                await trio.sleep(0.2)
        [received] = await client.fetch(uids[-1:])
        names = ", ".join(a.filename for a in received.attachments)
        report(f"mail: found it in INBOX (UID {received.uid}): {received.subject!r}, "
               f"attachments: {names}")
        await client.delete_messages(uids)
    report("mail: message deleted, connections closed")
