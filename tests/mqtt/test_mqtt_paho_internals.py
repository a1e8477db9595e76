"""trionet.mqtt overrides a few private hooks of paho-mqtt 2.x (see trionet/mqtt/_paho.py).

If a paho release renames or reshapes them, these tests fail before anything subtle breaks.
"""

from __future__ import annotations

import inspect
import socket
import warnings

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from trionet.mqtt._paho import EngineSettings, PahoEngine, _BufferedClient, encode_publish0


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("_sock_recv", ["self", "bufsize"]),
        ("_sock_send", ["self", "buf"]),
        ("_sock_close", ["self"]),
        ("_mid_generate", ["self"]),
        ("_handle_pubrel", ["self"]),
        ("_handle_pubrec", ["self"]),
        ("_ssl_wrap_socket", ["self", "tcp_sock"]),
        ("_create_socket", ["self"]),
        ("_create_socket_connection", ["self"]),
        ("_send_pubcomp", ["self", "mid"]),
        ("_reset_sockets", ["self", "sockpair_only"]),
        ("_handle_on_message", ["self", "message"]),
        ("_handle_pubackcomp", ["self", "cmd"]),
        ("_do_on_publish", ["self", "mid", "reason_code", "properties"]),
        ("_send_publish", ["self", "mid", "topic", "payload", "qos", "retain", "dup", "info",
                           "properties"]),
        # enhanced authentication (trionet/mqtt/_paho_auth.py)
        ("_packet_handle", ["self"]),
        ("_packet_queue", ["self", "command", "packet", "mid", "qos", "info"]),
    ],
)
def test_overridden_paho_hooks_still_exist(name: str, parameters: list[str]) -> None:
    method = getattr(paho.Client, name)
    assert list(inspect.signature(method).parameters) == parameters


def test_paho_state_used_by_the_overrides() -> None:
    client = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="x", manual_ack=True)
    for attribute in ("_in_packet", "_in_messages", "_out_messages", "_manual_ack", "_sock",
                      "_ssl", "_ssl_context", "_transport", "_host", "_port",
                      "_connect_timeout", "_websocket_path", "_websocket_extra_headers",
                      "_on_publish", "_on_message", "_userdata", "_out_packet",
                      "_last_msg_out", "_protocol", "_connect_properties"):
        assert hasattr(client, attribute), attribute
    assert hasattr(paho, "_WebsocketWrapper")
    assert "packet" in client._in_packet


def test_no_deprecation_warnings_from_paho() -> None:
    settings = EngineSettings(
        client_id="x", protocol=4, clean_start=True, session_expiry=None, keepalive=60,
        username=None, password=None, tls=None, transport="tcp", websocket_path="/mqtt",
        websocket_headers=None, will=None, max_inflight=20, receive_maximum=None,
        connect_timeout=5.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PahoEngine(settings, lambda events: None, lambda r, w, t: ([], []))


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize(
    ("topic", "size"),
    [("a", 0), ("t/1", 1), ("ünïcode/topic", 32), ("x" * 100, 27), ("y", 125), ("y", 126),
     ("long/" * 20, 16_300), ("z", 16_384), ("z", 2_097_152)],
)
def test_qos0_publish_bytes_match_paho(protocol: int, retain: bool, topic: str, size: int) -> None:
    # trionet writes QoS 0 PUBLISH packets itself; they must be exactly what paho would write
    # (remaining lengths around the 1/2/3/4-byte boundaries of the variable byte integer)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    client = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="x", protocol=protocol)
    left, right = socket.socketpair()
    try:
        client._sock = left
        info = paho.MQTTMessageInfo(1)
        client._send_publish(1, topic.encode(), payload, 0, retain, False, info, None)
        expected = bytes(client.wbuf)
    finally:
        client._sock = None
        left.close()
        right.close()
    ours = encode_publish0(topic.encode(), payload, retain, protocol == paho.MQTTv5)
    assert bytes(ours) == expected
