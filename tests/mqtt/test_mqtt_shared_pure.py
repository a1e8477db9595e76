"""The pure parts shared with ``trionet.bus``: one topic matcher, one ``mqtt://`` grammar, and
``import trionet.mqtt`` / ``import trionet.bus`` without paho-mqtt loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from trionet import bus
from trionet.bus import MqttConfig, parse_url
from trionet.errors import ConfigurationError
from trionet.mqtt import MQTTV5, MQTTV311, parse_mqtt_url, topic_matches

# -- one topic matcher -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        # MQTT 5 §4.8.2: the $share/{ShareName}/ prefix is not part of what is matched. The
        # bus's copy of the matcher treated "$share" as an ordinary first level: it matched
        # none of these the way the client (and the broker) does.
        ("$share/g/a/+", "a/b", True),
        ("$share/g/a/#", "a", True),
        ("$share/g/a/b", "a/b", True),
        ("$share/g/a/b", "$share/g/a/b", False),
        ("$share/g/#", "$SYS/x", False),  # the filter proper starts with a wildcard
        ("$share/g/+/x", "$SYS/x", False),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/#", "a/$x", True),
    ],
)
def test_the_bus_matches_as_the_mqtt_client_does(
    topic_filter: str, topic: str, expected: bool
) -> None:
    assert topic_matches(topic_filter, topic) is expected
    assert bus.topic_matches(topic_filter, topic) is expected
    assert bus.TopicFilter(topic_filter).matches(topic) is expected


_level = st.sampled_from(["a", "b", "", "$x", "$share"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter = st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#",
                                    "$share/g/" + "/".join(levels)])
)


@given(topic_filter=_filter, topic=_topic)
def test_bus_filters_agree_with_the_mqtt_matcher(topic_filter: str, topic: str) -> None:
    try:
        compiled = bus.TopicFilter(topic_filter)
    except ConfigurationError:
        return
    assert compiled.matches(topic) is topic_matches(topic_filter, topic)


# -- one mqtt:// grammar ---------------------------------------------------------------------


def test_the_client_accepts_what_it_accepted() -> None:
    assert parse_mqtt_url("tcp://h") == ("h", None, {"transport": "tcp"})
    for scheme in ("mqtts", "ssl", "tls"):
        assert parse_mqtt_url(f"{scheme}://h:1") == ("h", 1, {"transport": "tcp", "tls": True})
    assert parse_mqtt_url("wss://u@h/ws") == (
        "h", None, {"transport": "websockets", "tls": True, "username": "u",
                    "websocket_path": "/ws"})
    assert parse_mqtt_url("MQTT://[::1]:1883") == ("::1", 1883, {"transport": "tcp"})
    assert parse_mqtt_url("mqtt://") == ("localhost", None, {"transport": "tcp"})
    assert parse_mqtt_url("mqtt://@h") == ("h", None, {"transport": "tcp"})
    assert parse_mqtt_url("mqtt://u:@h")[2] == {"transport": "tcp", "username": "u",
                                                "password": ""}
    for version, protocol in (("4", MQTTV311), ("311", MQTTV311), ("5.0", MQTTV5)):
        assert parse_mqtt_url(f"mqtt://h?protocol={version}")[2]["protocol"] == protocol
    options = parse_mqtt_url("mqtt://h?allow_insecure_auth=1&clean_start=TRUE&client_id=")[2]
    assert options == {"transport": "tcp", "allow_insecure_auth": True, "clean_start": True,
                       "client_id": ""}
    for bad in ("mqtt://[::1", "mqtt://h?keepalive=-1", "mqtt://h?clean_start=yes",
                "mqtt://h?qos=1", "kafka://h"):
        with pytest.raises(ConfigurationError):
            parse_mqtt_url(bad)


def test_the_bus_accepts_what_it_accepted() -> None:
    assert parse_url("mqtt://h") == MqttConfig(host="h")
    assert parse_url("MQTTS://u:p%3A@[::1]:8884?tls=no&v=3.1.1&clean_session=off") == (
        MqttConfig(host="::1", port=8884, username="u", password="p:", tls=False,
                   version="3.1.1", clean_start=False))
    assert parse_url("mqtt://@h") == MqttConfig(host="h", username="")
    assert parse_url("mqtt://u:@h/") == MqttConfig(host="h", username="u", password="")
    assert parse_url("mqtt://h?allow_insecure_auth=yes&keepalive=0&topics=a,b") == MqttConfig(
        host="h", allow_insecure_auth=True, keepalive=0, default_subscription_topics=("a", "b"))
    for bad in ("ws://h", "tcp://h", "mqtt://", "mqtt://h:0x1", "mqtt://[::1",
                "mqtt://h?protocol=5", "mqtt://h?version=5.0"):
        with pytest.raises(ConfigurationError):
            parse_url(bad)


# -- paho is imported only when a client starts ------------------------------------------------


def test_importing_the_packages_loads_no_paho() -> None:
    code = (
        "import sys, trionet.mqtt, trionet.bus, trionet.bus.testing\n"
        "from trionet.mqtt import MQTTClient, parse_mqtt_url, topic_matches\n"
        "MQTTClient(); parse_mqtt_url('mqtt://h'); trionet.bus.parse_url('mqtt://h')\n"
        "loaded = sorted(m for m in sys.modules if m == 'paho' or m.startswith('paho.'))\n"
        "print(loaded); sys.exit(1 if loaded else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
