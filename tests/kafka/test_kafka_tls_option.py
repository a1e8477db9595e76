"""The Kafka clients take tls= as the other components do (issue 23, "TLS everywhere"): it
becomes the engine's security_protocol and ssl_* options; a contradiction is refused."""

from __future__ import annotations

import ssl

import pytest

from trionet.errors import ConfigurationError
from trionet.kafka import KafkaAdmin, KafkaConsumer, KafkaProducer
from trionet.kafka._options import with_tls
from trionet.tls import TLSOptions


def test_tls_becomes_the_ssl_options() -> None:
    assert with_tls({"acks": 1}) == {"acks": 1}
    assert with_tls({"tls": False}) == {}
    assert with_tls({"tls": True}) == {"security_protocol": "SSL"}
    assert with_tls({"tls": True, "sasl_mechanism": "SCRAM-SHA-256"})["security_protocol"] == (
        "SASL_SSL")
    options = TLSOptions(ca_file="ca.pem", cert_file="me.pem", key_file="me.key")
    assert with_tls({"tls": options}) == {
        "security_protocol": "SSL", "ssl_cafile": "ca.pem", "ssl_certfile": "me.pem",
        "ssl_keyfile": "me.key"}
    context = ssl.create_default_context()
    assert with_tls({"tls": context})["ssl_context"] is context
    with pytest.raises(ConfigurationError, match="PLAINTEXT"):
        with_tls({"tls": True, "security_protocol": "PLAINTEXT"})
    with pytest.raises(ConfigurationError, match="tls must be"):
        with_tls({"tls": "yes"})


def test_every_client_takes_tls(kafka_backend: str) -> None:
    tls = TLSOptions(ca_file="ca.pem")  # each engine (kafka_backend) accepts what tls= sets
    KafkaProducer("127.0.0.1:9", tls=tls)
    KafkaConsumer("t", bootstrap_servers="127.0.0.1:9", group_id="g", tls=tls)
    KafkaAdmin("127.0.0.1:9", tls=True)
