"""trionet.mqtt overrides a few private hooks of paho-mqtt 2.x (see trionet/mqtt/_paho.py).

If a paho release renames or reshapes them, these tests fail before anything subtle breaks.
"""

from __future__ import annotations

import inspect
import warnings

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from trionet.mqtt._paho import EngineSettings, PahoEngine, _BufferedClient


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("_sock_recv", ["self", "bufsize"]),
        ("_sock_send", ["self", "buf"]),
        ("_sock_close", ["self"]),
        ("_mid_generate", ["self"]),
        ("_handle_pubrel", ["self"]),
        ("_ssl_wrap_socket", ["self", "tcp_sock"]),
        ("_create_socket", ["self"]),
        ("_create_socket_connection", ["self"]),
        ("_send_pubcomp", ["self", "mid"]),
        ("_reset_sockets", ["self", "sockpair_only"]),
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
                      "_on_publish"):
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
