"""Every Python example in docs/mail.rst runs, against the real Postfix and Dovecot."""

from __future__ import annotations

from pathlib import Path

import pytest

from trionet.testing import MailServers, python_code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "mail.rst"


BLOCKS = python_code_blocks(DOC)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(
    index: int, mail_servers: MailServers, capsys: pytest.CaptureFixture[str]
) -> None:
    info = mail_servers.info
    bob = info.user("bob")
    namespace: dict[str, object] = {
        "__name__": f"mail_doc_example_{index}",
        "HOST": info.host,
        "SMTP_PORT": info.smtp_port,
        "IMAPS_PORT": info.imaps_port,
        "DEV_SMTP_PORT": info.smtp_plain_port,
        "ADDRESS": bob.address,
        "PASSWORD": bob.password,
        "TO": info.user("alice").address,
        "TLS": info.ssl_context(),
    }
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), namespace)
    assert "Traceback" not in capsys.readouterr().err
