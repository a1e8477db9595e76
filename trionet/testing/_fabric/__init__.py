"""The test fabric: in-memory MQTT and Kafka brokers, fault injection, ``TestBus``."""

from __future__ import annotations

from ._broker import FabricBroker, FabricProvider, FabricStatistics
from ._bus import Fabric, HandledMessage, TestBus
from ._faults import FaultRule, Faults
from ._kafka import KafkaFabric, murmur2, partition_for
from ._mqtt import MqttFabric

__all__ = [
    "Fabric",
    "FabricBroker",
    "FabricProvider",
    "FabricStatistics",
    "FaultRule",
    "Faults",
    "HandledMessage",
    "KafkaFabric",
    "MqttFabric",
    "TestBus",
    "murmur2",
    "partition_for",
]
