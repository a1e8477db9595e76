"""Fixtures of the Kafka tests."""

from __future__ import annotations

import pytest

from trionet.testing import KafkaBroker


@pytest.fixture
def servers(kafka_broker: KafkaBroker) -> str:
    """The bootstrap servers of the session's broker (``TRIONET_KAFKA_BOOTSTRAP``, or noida-db)."""
    return kafka_broker.info.bootstrap_servers
