"""MQTT 3.1.1 and 5.0 client for trio, on paho-mqtt.

The seed's shape (mtaio) works as written::

    client = MQTTClient()

    @client.on_message
    async def handle_message(message):
        print(f"Received: {message.payload}")

    async with client:
        await client.connect("localhost", 1883)
        await client.subscribe("test/topic", qos=QoS.AT_LEAST_ONCE)
        await client.publish("test/topic", "Hello MQTT", qos=QoS.AT_LEAST_ONCE)

and so does the trio-idiomatic one::

    async with open_mqtt_client("mqtt://localhost") as client:
        async with client.subscription("sensors/+", qos=1) as messages:
            async for message in messages:
                ...

paho-mqtt does the protocol on one network thread owned by the client's ``async with`` block;
see :mod:`trionet.mqtt._client` for how the two sides meet. This package needs paho-mqtt
(``pip install 'trionet[mqtt]'``): importing it checks that paho is installed, but paho itself
is imported only when a client starts (so ``import trionet.mqtt`` stays cheap, and the pure
parts, topics and URLs, never load it).
"""

from __future__ import annotations

import importlib.util as _importlib_util

from .._extras import missing_extra as _missing_extra
from .._util import fix_public_modules as _fix_public_modules
from ..errors import (
    MQTTConnectError as MQTTConnectError,
    MQTTError as MQTTError,
    MQTTNotConnected as MQTTNotConnected,
    MQTTTimeout as MQTTTimeout,
)
from ._auth import (
    MAX_AUTH_DATA as MAX_AUTH_DATA,
    MAX_AUTH_ROUNDS as MAX_AUTH_ROUNDS,
    Authenticator as Authenticator,
    ScramAuthenticator as ScramAuthenticator,
)
from ._client import (
    MessageHandler as MessageHandler,
    MQTTClient as MQTTClient,
    open_mqtt_client as open_mqtt_client,
)
from ._errors import (
    InvalidPayload as InvalidPayload,
    InvalidTopic as InvalidTopic,
    MQTTAuthError as MQTTAuthError,
    MQTTPublishError as MQTTPublishError,
    MQTTSessionTakenOver as MQTTSessionTakenOver,
    MQTTSubscribeError as MQTTSubscribeError,
)
from ._message import (
    MQTTV5 as MQTTV5,
    MQTTV311 as MQTTV311,
    BrokerLimits as BrokerLimits,
    ConnectionEvent as ConnectionEvent,
    ConnectionState as ConnectionState,
    MessageProperties as MessageProperties,
    MQTTMessage as MQTTMessage,
    MQTTStatistics as MQTTStatistics,
    Payload as Payload,
    QoS as QoS,
    Will as Will,
)
from ._options import MQTTClientOptions as MQTTClientOptions
from ._reconnect import ReconnectPolicy as ReconnectPolicy
from ._subscription import (
    ConnectionEvents as ConnectionEvents,
    Subscription as Subscription,
    SubscriptionStatistics as SubscriptionStatistics,
)
from ._topics import (
    TopicMatcher as TopicMatcher,
    parse_filter as parse_filter,
    topic_matches as topic_matches,
    validate_filter as validate_filter,
    validate_topic as validate_topic,
)
from ._url import parse_mqtt_url as parse_mqtt_url


def _require_paho() -> None:
    try:
        found = _importlib_util.find_spec("paho") is not None
    except ValueError:  # imported already, by someone who left no spec
        found = True
    if not found:
        error = ModuleNotFoundError("No module named 'paho'", name="paho")
        raise _missing_extra("trionet.mqtt", "paho-mqtt", error) from error


_require_paho()

__all__ = [
    "MAX_AUTH_DATA",
    "MAX_AUTH_ROUNDS",
    "MQTTV5",
    "MQTTV311",
    "Authenticator",
    "BrokerLimits",
    "ConnectionEvent",
    "ConnectionEvents",
    "ConnectionState",
    "InvalidPayload",
    "InvalidTopic",
    "MQTTAuthError",
    "MQTTClient",
    "MQTTClientOptions",
    "MQTTConnectError",
    "MQTTError",
    "MQTTMessage",
    "MQTTNotConnected",
    "MQTTPublishError",
    "MQTTSessionTakenOver",
    "MQTTStatistics",
    "MQTTSubscribeError",
    "MQTTTimeout",
    "MessageHandler",
    "MessageProperties",
    "Payload",
    "QoS",
    "ReconnectPolicy",
    "ScramAuthenticator",
    "Subscription",
    "SubscriptionStatistics",
    "TopicMatcher",
    "Will",
    "open_mqtt_client",
    "parse_filter",
    "parse_mqtt_url",
    "topic_matches",
    "validate_filter",
    "validate_topic",
]

_fix_public_modules(globals())
