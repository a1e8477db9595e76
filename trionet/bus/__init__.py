"""The message bus: ``DistributedApplication`` over ``memory://``, ``mqtt://`` and ``kafka://``.

A trio rewrite of spa_dat. Applications are async functions registered with decorators:
consumers (``@app.application(topics)``) are called for every message on their topics,
producers (``@app.producer()``) run once. They talk through sockets (``publish``,
``subscribe``, ``unsubscribe``, ``request``, ``reply``) made by a socket provider for a
broker URL::

    from trionet.bus import BusMessage, DistributedApplication

    app = DistributedApplication("memory://")

    @app.application("greetings/+")
    async def greeter(message, socket):
        await socket.reply(message, b"hello " + message.payload)

    @app.producer()
    async def ask(socket):
        reply = await socket.request(BusMessage(b"trio", "greetings/en"))
        print(reply.payload)
        app.stop()

    app.start()

``memory://`` needs nothing but trio; ``mqtt://`` needs the ``mqtt`` extra and ``kafka://``
the ``kafka`` extra (imported only when such a socket is made).
"""

from __future__ import annotations

from .._util import fix_public_modules as _fix_public_modules
from ._app import (
    ApplicationSpec as ApplicationSpec,
    AppStatistics as AppStatistics,
    ConsumerCallback as ConsumerCallback,
    DistributedApplication as DistributedApplication,
    ProducerCallback as ProducerCallback,
    Resource as Resource,
)
from ._asyncapi_html import asyncapi_html as asyncapi_html, asyncapi_router as asyncapi_router
from ._channel import (
    ChannelRequestError as ChannelRequestError,
    ChannelSocket as ChannelSocket,
    ChannelSocketProvider as ChannelSocketProvider,
    channel_request as channel_request,
)
from ._config import (
    BusConfig as BusConfig,
    ChannelConfig as ChannelConfig,
    KafkaConfig as KafkaConfig,
    MemoryConfig as MemoryConfig,
    MqttConfig as MqttConfig,
    parse_url as parse_url,
)
from ._errors import (
    BusClosed as BusClosed,
    BusError as BusError,
    EnvelopeError as EnvelopeError,
    InvalidPayload as InvalidPayload,
    NoResponseTopic as NoResponseTopic,
    RequestTimeout as RequestTimeout,
)
from ._memory import (
    MemoryBroker as MemoryBroker,
    MemoryBrokerStatistics as MemoryBrokerStatistics,
    MemorySocket as MemorySocket,
    MemorySocketProvider as MemorySocketProvider,
)
from ._message import (
    BusMessage as BusMessage,
    EnvelopeCodec as EnvelopeCodec,
    SpaMessage as SpaMessage,
    decode_envelope as decode_envelope,
    encode_envelope as encode_envelope,
)
from ._middleware import (
    ConsumeNext as ConsumeNext,
    LoggingMiddleware as LoggingMiddleware,
    Middleware as Middleware,
    PublishNext as PublishNext,
    RetryMiddleware as RetryMiddleware,
)
from ._payload import decode_payload as decode_payload, encode_payload as encode_payload
from ._policy import (
    AckPolicy as AckPolicy,
    Backoff as Backoff,
    ErrorPolicy as ErrorPolicy,
    RestartPolicy as RestartPolicy,
)
from ._providers import (
    SocketProviderFactory as SocketProviderFactory,
    from_config as from_config,
    from_url as from_url,
)
from ._socket import (
    REPLY_PREFIX as REPLY_PREFIX,
    BusSocket as BusSocket,
    Delivery as Delivery,
    SocketProvider as SocketProvider,
    SocketStatistics as SocketStatistics,
    SpaSocket as SpaSocket,
)
from ._topics import (
    TopicFilter as TopicFilter,
    check_topic as check_topic,
    check_topic_filter as check_topic_filter,
    topic_matches as topic_matches,
)
from ._typed import (
    CorrelationId as CorrelationId,
    Header as Header,
    Headers as Headers,
    Inject as Inject,
    MessageId as MessageId,
    State as State,
)

__all__ = [
    "REPLY_PREFIX",
    "AckPolicy",
    "AppStatistics",
    "ApplicationSpec",
    "Backoff",
    "BusClosed",
    "BusConfig",
    "BusError",
    "BusMessage",
    "BusSocket",
    "ChannelConfig",
    "ChannelRequestError",
    "ChannelSocket",
    "ChannelSocketProvider",
    "ConsumeNext",
    "ConsumerCallback",
    "CorrelationId",
    "Delivery",
    "DistributedApplication",
    "EnvelopeCodec",
    "EnvelopeError",
    "ErrorPolicy",
    "Header",
    "Headers",
    "Inject",
    "InvalidPayload",
    "KafkaConfig",
    "LoggingMiddleware",
    "MemoryBroker",
    "MemoryBrokerStatistics",
    "MemoryConfig",
    "MemorySocket",
    "MemorySocketProvider",
    "MessageId",
    "Middleware",
    "MqttConfig",
    "NoResponseTopic",
    "ProducerCallback",
    "PublishNext",
    "RequestTimeout",
    "Resource",
    "RestartPolicy",
    "RetryMiddleware",
    "SocketProvider",
    "SocketProviderFactory",
    "SocketStatistics",
    "SpaMessage",
    "SpaSocket",
    "State",
    "TopicFilter",
    "asyncapi_html",
    "asyncapi_router",
    "channel_request",
    "check_topic",
    "check_topic_filter",
    "decode_envelope",
    "decode_payload",
    "encode_envelope",
    "encode_payload",
    "from_config",
    "from_url",
    "parse_url",
    "topic_matches",
]

_fix_public_modules(globals())
