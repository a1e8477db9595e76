"""Helpers for testing trionet programs: real-server launchers, pytest fixtures, and the
test fabric (:class:`TestBus`: bus applications on in-memory MQTT and Kafka brokers).

The pytest plugin in :mod:`trionet.testing._plugin` is registered through the ``pytest11`` entry
point, so installing trionet makes its fixtures (``mosquitto``, ``kafka_broker``,
``mail_servers``, ``tls_ca``, ...) available to any pytest run; ``-p no:trionet`` turns it off.
Importing this module loads no optional dependency: trustme, paho-mqtt and kafka-python are
imported only inside the fixtures that need them.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ._docs import python_code_blocks as python_code_blocks
from ._fabric import (
    Fabric as Fabric,
    FabricBroker as FabricBroker,
    FabricProvider as FabricProvider,
    FabricStatistics as FabricStatistics,
    FaultRule as FaultRule,
    Faults as Faults,
    HandledMessage as HandledMessage,
    KafkaFabric as KafkaFabric,
    MqttFabric as MqttFabric,
    TestBus as TestBus,
    murmur2 as murmur2,
    partition_for as partition_for,
)
from ._kafka_tls import KafkaTLSBroker as KafkaTLSBroker, KafkaTLSInfo as KafkaTLSInfo
from ._servers import (
    DEFAULT_MAIL_USERS as DEFAULT_MAIL_USERS,
    KAFKA_BOOTSTRAP_ENV as KAFKA_BOOTSTRAP_ENV,
    KAFKA_TEST_CONSUMER_CONFIG as KAFKA_TEST_CONSUMER_CONFIG,
    KafkaBroker as KafkaBroker,
    KafkaInfo as KafkaInfo,
    MailInfo as MailInfo,
    MailServers as MailServers,
    MailUser as MailUser,
    MosquittoInfo as MosquittoInfo,
    MosquittoServer as MosquittoServer,
    ServerError as ServerError,
    ServerNotInstalled as ServerNotInstalled,
    ServerStartError as ServerStartError,
    fresh_loopback_address as fresh_loopback_address,
)

__all__ = [
    "DEFAULT_MAIL_USERS",
    "KAFKA_BOOTSTRAP_ENV",
    "KAFKA_TEST_CONSUMER_CONFIG",
    "Fabric",
    "FabricBroker",
    "FabricProvider",
    "FabricStatistics",
    "FaultRule",
    "Faults",
    "HandledMessage",
    "KafkaBroker",
    "KafkaFabric",
    "KafkaInfo",
    "KafkaTLSBroker",
    "KafkaTLSInfo",
    "MailInfo",
    "MailServers",
    "MailUser",
    "MosquittoInfo",
    "MosquittoServer",
    "MqttFabric",
    "ServerError",
    "ServerNotInstalled",
    "ServerStartError",
    "TestBus",
    "fresh_loopback_address",
    "murmur2",
    "partition_for",
    "python_code_blocks",
]

_fix_public_modules(globals())
