"""``trionet demo --only mail``: a message with an attachment goes out over SMTP (STARTTLS or
implicit TLS) and comes back over IMAP, against the real Postfix and Dovecot."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import pytest
import trio

from trionet.demo._mail import demo, parse_mail_url
from trionet.errors import ConfigurationError
from trionet.testing import MailServers


def _urls(servers: MailServers, implicit: bool) -> tuple[str, str]:
    info = servers.info
    bob = info.user("bob")
    auth = f"{quote(bob.address, safe='')}:{quote(bob.password, safe='')}"
    if implicit:
        return (f"smtps://{auth}@localhost:{info.smtps_port}",
                f"imaps://{auth}@localhost:{info.imaps_port}")
    return (f"smtp://{auth}@localhost:{info.smtp_port}",
            f"imap://{auth}@localhost:{info.imap_port}")


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
async def test_the_mail_demo_sends_and_reads_back(mail_servers: MailServers,
                                                  implicit: bool) -> None:
    smtp, imap = _urls(mail_servers, implicit)
    lines: list[str] = []
    with trio.fail_after(60):
        await demo(lines.append, smtp, imap, str(mail_servers.info.ca_file))
    assert lines[0].startswith("mail: sent 'trionet demo ")
    assert "found it in INBOX" in lines[1] and "attachments: greeting.txt" in lines[1]
    assert lines[-1] == "mail: message deleted, connections closed"


def test_the_mail_demo_from_the_command_line(mail_servers: MailServers) -> None:
    smtp, imap = _urls(mail_servers, implicit=False)
    proc = subprocess.run(
        [sys.executable, "-m", "trionet", "demo", "--only", "mail", "--smtp", smtp, "--imap",
         imap, "--ca-file", str(mail_servers.info.ca_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "attachments: greeting.txt" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "trionet", "demo", "--only", "mail"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2
    assert "needs --smtp" in missing.stderr and "Traceback" not in missing.stderr


def test_mail_urls() -> None:
    url = parse_mail_url("smtps://a%40b.test:p%3Aw@mx.test", "smtp")
    assert (url.username, url.password, url.port, url.implicit_tls) == ("a@b.test", "p:w", 465,
                                                                       True)
    assert parse_mail_url("imap://u:p@h", "imap").port == 143
    for bad in ("http://u:p@h", "smtp://h:25", "smtp://u:p@:25"):
        with pytest.raises(ConfigurationError):
            parse_mail_url(bad, "smtp")
