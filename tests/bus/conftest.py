"""Fixtures of the bus tests: ``provider_url`` runs each contract test on every broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bus_support import unique

from trionet.testing import Fabric

PROVIDERS = ["memory", "mqtt", "kafka", "fabric-mqtt", "fabric-kafka"]


@pytest.fixture(params=PROVIDERS)
def provider_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker URL: a private ``memory://`` broker, the session's mosquitto, or its Kafka,
    or the same kinds of URL served by the test fabric (``fabric-*``: every provider made
    during the test is the fabric's, see ``Fabric.intercept``), so that the contract tests
    hold for the fabric too.

    Each test gets its own broker name / client ids / consumer groups; topics must still be
    unique per test (use :func:`unique`).
    """
    kind = request.param
    if kind.startswith("fabric-"):
        with Fabric(seed=0).intercept():
            yield _url(request, kind.removeprefix("fabric-"), fabric=True)
    else:
        yield _url(request, kind, fabric=False)


def _url(request: pytest.FixtureRequest, kind: str, *, fabric: bool) -> str:
    tag = unique("bus")
    if kind == "memory":
        return f"memory://{tag}"
    if fabric:
        host = "fabric.invalid:1883" if kind == "mqtt" else "fabric.invalid:9092"
        return (f"{kind}://{host}?client_id={tag}&request_timeout=10"
                + (f"&offset_reset=earliest&group={tag}" if kind == "kafka" else ""))
    if kind == "mqtt":
        info = request.getfixturevalue("shared_mosquitto").info
        return f"mqtt://{info.host}:{info.port}?client_id={tag}&request_timeout=10"
    info = request.getfixturevalue("kafka_broker").info
    return (f"kafka://{info.bootstrap_servers}?offset_reset=earliest&client_id={tag}"
            f"&group={tag}&request_timeout=10&commit_interval=0.2"
            "&consumer.session_timeout_ms=6000&consumer.heartbeat_interval_ms=1000"
            "&consumer.metadata_max_age_ms=1000")
