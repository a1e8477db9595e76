"""Fixtures of the bus tests: ``provider_url`` runs each contract test on every broker."""

from __future__ import annotations

import pytest
from bus_support import unique

PROVIDERS = ["memory", "mqtt", "kafka"]


@pytest.fixture(params=PROVIDERS)
def provider_url(request: pytest.FixtureRequest) -> str:
    """A broker URL: a private ``memory://`` broker, the session's mosquitto, or its Kafka.

    Each test gets its own broker name / client ids / consumer groups; topics must still be
    unique per test (use :func:`unique`).
    """
    kind = request.param
    tag = unique("bus")
    if kind == "memory":
        return f"memory://{tag}"
    if kind == "mqtt":
        info = request.getfixturevalue("shared_mosquitto").info
        return f"mqtt://{info.host}:{info.port}?client_id={tag}&request_timeout=10"
    info = request.getfixturevalue("kafka_broker").info
    return (f"kafka://{info.bootstrap_servers}?offset_reset=earliest&client_id={tag}"
            f"&group={tag}&request_timeout=10&commit_interval=0.2"
            "&consumer.session_timeout_ms=6000&consumer.heartbeat_interval_ms=1000"
            "&consumer.metadata_max_age_ms=1000")
