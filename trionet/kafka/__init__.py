"""Kafka for trio: producer, consumer, admin client and request/reply, on an engine.

Every client is an async context manager that owns the threads it needs and waits for them on
exit::

    async with KafkaProducer("127.0.0.1:9092") as producer:
        await producer.send("orders", b"one", key=b"customer-7")

    async with KafkaConsumer("orders", bootstrap_servers="127.0.0.1:9092",
                             group_id="billing", auto_offset_reset="earliest") as consumer:
        async for record in consumer:
            ...
            await consumer.commit()

The clients are trio drivers around an engine, a client library behind the protocols of
:mod:`trionet.kafka._engine`, chosen with ``backend=`` (``kafka://...?backend=``). The default
engine is kafka-python's, imported only by :mod:`trionet.kafka._kafka_python` and its engine
modules (install the ``kafka`` extra: ``pip install trionet[kafka]``). Engine errors reach you
as :class:`~trionet.errors.KafkaError` subclasses.
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ..errors import KafkaError as KafkaError

# The default engine, imported now: without kafka-python, importing trionet.kafka fails with
# an ImportError that names the extra to install.
from . import _kafka_python_engine as _kafka_python_engine
from ._admin import (
    KafkaAdmin as KafkaAdmin,
    NewTopic as NewTopic,
    PartitionDescription as PartitionDescription,
    TopicDescription as TopicDescription,
)
from ._consumer import (
    ConsumerRebalanceListener as ConsumerRebalanceListener,
    KafkaConsumer as KafkaConsumer,
)
from ._errors import (
    KafkaCommitError as KafkaCommitError,
    KafkaConnectionError as KafkaConnectionError,
    KafkaDeliveryError as KafkaDeliveryError,
    KafkaPartitionsRevokedError as KafkaPartitionsRevokedError,
    KafkaRemoteError as KafkaRemoteError,
    KafkaTimeout as KafkaTimeout,
    RecordDecodeError as RecordDecodeError,
    UnknownTopicError as UnknownTopicError,
)
from ._producer import (
    Delivery as Delivery,
    KafkaProducer as KafkaProducer,
    ProducerStatistics as ProducerStatistics,
)
from ._records import (
    Deserializer as Deserializer,
    HeadersInput as HeadersInput,
    KafkaRecord as KafkaRecord,
    RecordMetadata as RecordMetadata,
    Serializer as Serializer,
    TopicPartition as TopicPartition,
)
from ._requestreply import (
    CORRELATION_ID_HEADER as CORRELATION_ID_HEADER,
    DEADLINE_HEADER as DEADLINE_HEADER,
    ERROR_HEADER as ERROR_HEADER,
    REPLY_PARTITION_HEADER as REPLY_PARTITION_HEADER,
    REPLY_TO_HEADER as REPLY_TO_HEADER,
    KafkaRequester as KafkaRequester,
    RequesterStatistics as RequesterStatistics,
    reply as reply,
    serve_requests as serve_requests,
)
from ._url import KafkaURL as KafkaURL, parse_kafka_url as parse_kafka_url

__all__ = [
    "CORRELATION_ID_HEADER",
    "DEADLINE_HEADER",
    "ERROR_HEADER",
    "REPLY_PARTITION_HEADER",
    "REPLY_TO_HEADER",
    "ConsumerRebalanceListener",
    "Delivery",
    "Deserializer",
    "HeadersInput",
    "KafkaAdmin",
    "KafkaCommitError",
    "KafkaConnectionError",
    "KafkaConsumer",
    "KafkaDeliveryError",
    "KafkaError",
    "KafkaPartitionsRevokedError",
    "KafkaProducer",
    "KafkaRecord",
    "KafkaRemoteError",
    "KafkaRequester",
    "KafkaTimeout",
    "KafkaURL",
    "NewTopic",
    "PartitionDescription",
    "ProducerStatistics",
    "RecordDecodeError",
    "RecordMetadata",
    "RequesterStatistics",
    "Serializer",
    "TopicDescription",
    "TopicPartition",
    "UnknownTopicError",
    "parse_kafka_url",
    "reply",
    "serve_requests",
]

_fix_public_modules(globals())
