"""Fixtures of the Kafka tests.

Every test that talks to the broker runs once per engine (``backend=``): the
``kafka_backend`` parameter makes that engine the default of every client the test builds
(``KafkaProducer(servers)`` etc. without ``backend=``). Where the engines differ, a test asks
``kafka_backend`` and asserts the difference documented in docs/kafka.rst ("Engines").
"""

from __future__ import annotations

import pytest

from trionet.kafka import _engine
from trionet.testing import KafkaBroker

#: The engines every broker test runs on.
ENGINES = ("kafka-python", "confluent")
#: Modules whose tests run their programs in other processes (the default engine there), or
#: name their engine themselves.
_ONE_ENGINE = ("test_kafka_bench", "test_kafka_docs", "test_kafka_confluent", "test_kafka_layout",
               "test_kafka_cores")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in _ONE_ENGINE:
        return
    metafunc.parametrize("kafka_backend", ENGINES, indirect=True)


@pytest.fixture(autouse=True)
def kafka_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine of the test's clients (their default ``backend``)."""
    name: str = getattr(request, "param", _engine.DEFAULT_BACKEND)
    monkeypatch.setattr(_engine, "DEFAULT_BACKEND", name)
    return name


@pytest.fixture
def servers(kafka_broker: KafkaBroker) -> str:
    """The bootstrap servers of the session's broker (``TRIONET_KAFKA_BOOTSTRAP``, or noida-db)."""
    return kafka_broker.info.bootstrap_servers
