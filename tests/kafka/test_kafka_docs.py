"""Every complete program in docs/kafka.rst runs against the real broker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from trionet.testing import KafkaBroker, KafkaTLSBroker

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kafka.rst"


def _programs() -> list[str]:
    lines = DOCS.read_text().splitlines()
    programs: list[str] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == ".. code-block:: python":
            index += 1
            block: list[str] = []
            while index < len(lines) and (not lines[index].strip() or
                                          lines[index].startswith("    ")):
                block.append(lines[index][4:])
                index += 1
            programs.append("\n".join(block).strip() + "\n")
        else:
            index += 1
    return programs


PROGRAMS = _programs()


#: The broker of the TLS programs: only TLS, a certificate from a private CA.
TLS_BOOTSTRAP = 'BOOTSTRAP = "127.0.0.1:9093"'
TLS_CA = 'TLSOptions(ca_file="/etc/kafka/ca.pem")'


def test_the_page_has_programs() -> None:
    assert len(PROGRAMS) >= 7
    for program in PROGRAMS:
        assert 'BOOTSTRAP = "127.0.0.1:9092"' in program or (
            TLS_BOOTSTRAP in program and TLS_CA in program)
        assert program.rstrip().endswith("trio.run(main)")
    assert any(TLS_BOOTSTRAP in program for program in PROGRAMS)


@pytest.mark.parametrize("number", range(len(PROGRAMS)))
async def test_documented_program_runs(request: pytest.FixtureRequest, number: int,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = PROGRAMS[number]
    if TLS_BOOTSTRAP in source:  # against the broker that speaks only TLS
        tls_broker: KafkaTLSBroker = request.getfixturevalue("kafka_tls_broker")
        info = tls_broker.info
        source = source.replace(TLS_BOOTSTRAP, f'BOOTSTRAP = "{info.bootstrap_servers}"')
        source = source.replace(TLS_CA, f"TLSOptions(ca_file={str(info.ca_file)!r})")
    else:
        kafka_broker: KafkaBroker = request.getfixturevalue("kafka_broker")
        source = source.replace(
            'BOOTSTRAP = "127.0.0.1:9092"',
            f'BOOTSTRAP = "{kafka_broker.info.bootstrap_servers}"',
        )
    source = re.sub(r"\ntrio\.run\(main\)\s*$", "\n", source)
    namespace: dict[str, Any] = {"__name__": f"kafka_docs_example_{number}"}
    exec(compile(source, f"{DOCS.name}[program {number}]", "exec"), namespace)
    with trio.fail_after(30):
        await namespace["main"]()
    assert capsys.readouterr().out  # every program reports something
