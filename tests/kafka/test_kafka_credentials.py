"""SASL passwords and tokens never leave over a connection without TLS unless the caller opted
in by name (issue: kafka://user:secret@host sent the password in clear with SASL PLAIN)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio

from trionet.errors import ConfigurationError
from trionet.kafka import KafkaAdmin, KafkaConsumer, KafkaProducer

CLEAR = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
         "sasl_plain_username": "alice", "sasl_plain_password": "s3cret-pw"}


async def _listener(nursery: trio.Nursery, received: list[bytes]) -> int:
    """A loopback TCP listener that records every byte sent to it."""

    async def record(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            received.append(chunk)

    [listener] = await nursery.start(partial(trio.serve_tcp, record, 0, host="127.0.0.1"))
    return int(listener.socket.getsockname()[1])


Build = Callable[..., Any]
CLIENTS: list[tuple[str, Build]] = [
    ("producer", KafkaProducer),
    ("consumer", partial(KafkaConsumer, "topic")),
    ("admin", KafkaAdmin),
]


@pytest.mark.parametrize(("kind", "build"), CLIENTS, ids=[kind for kind, _ in CLIENTS])
async def test_sasl_plain_without_tls_is_refused_before_connecting(kind: str, build: Build
                                                                   ) -> None:
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await _listener(nursery, received)
        with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
            async with build(f"127.0.0.1:{port}", **CLEAR):
                pass  # pragma: no cover
        for mechanism in ("OAUTHBEARER", "plain"):
            with pytest.raises(ConfigurationError, match="without TLS"):
                build(f"127.0.0.1:{port}", **{**CLEAR, "sasl_mechanism": mechanism})
        await trio.sleep(0.2)  # anything sent would have arrived by now
        assert received == []
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("kind", "build"), CLIENTS, ids=[kind for kind, _ in CLIENTS])
def test_opting_in_or_encrypting_passes_the_check(kind: str, build: Build) -> None:
    # constructing does not connect: the check is the only thing that could fail here
    build("127.0.0.1:9", **CLEAR, allow_insecure_auth=True)
    build("127.0.0.1:9", **{**CLEAR, "security_protocol": "SASL_SSL"})
    build("127.0.0.1:9", **{**CLEAR, "sasl_mechanism": "SCRAM-SHA-256"})
    with pytest.raises(ConfigurationError, match="True or False"):
        build("127.0.0.1:9", **CLEAR, allow_insecure_auth="yes")


def test_urls_with_user_information() -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
        KafkaProducer.from_url("kafka://alice:secret@127.0.0.1:9")
    KafkaProducer.from_url("kafka://alice:secret@127.0.0.1:9?allow_insecure_auth=true")
    KafkaProducer.from_url("kafka+ssl://alice:secret@127.0.0.1:9")
    KafkaConsumer.from_url("kafka://alice:secret@127.0.0.1:9?sasl_mechanism=SCRAM-SHA-512",
                           "topic")
