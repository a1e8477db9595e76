"""The error tree's branches: protocol errors, peer (connection and remote) failures, and the
compatibility of the peer failures with the component bases they always had."""

from __future__ import annotations

import pytest
import trio

import trionet
from trionet import errors
from trionet.aproto import ConnectionClosed
from trionet.kafka import KafkaConnectionError, KafkaError, KafkaRemoteError
from trionet.mail import (
    IMAPConnectionError,
    MailConnectionError,
    MailNotConnected,
    SMTPConnectionError,
)

CONNECTION_FAILURES = [
    errors.MQTTConnectError,
    errors.MQTTNotConnected,
    errors.ChannelClosed,
    KafkaConnectionError,
    MailConnectionError,
    MailNotConnected,
    SMTPConnectionError,
    IMAPConnectionError,
    ConnectionClosed,
]


def test_the_three_branches_are_distinct() -> None:
    for branch in (errors.ProtocolError, errors.PeerFailure, errors.ConfigurationError):
        assert issubclass(branch, errors.TrionetError)
    assert issubclass(errors.ConnectionFailure, errors.PeerFailure)
    assert not issubclass(errors.PeerFailure, errors.ProtocolError)
    assert not issubclass(errors.ProtocolError, errors.PeerFailure)
    assert not issubclass(errors.ConnectionFailure, errors.ProtocolError)


@pytest.mark.parametrize("cls", CONNECTION_FAILURES, ids=lambda cls: cls.__name__)
def test_connection_errors_are_connection_failures(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.ConnectionFailure)
    assert issubclass(cls, errors.PeerFailure)


def test_remote_failures_are_peer_failures_but_not_connection_failures() -> None:
    for cls in (errors.RemoteException, KafkaRemoteError):
        assert issubclass(cls, errors.PeerFailure)
        assert not issubclass(cls, errors.ConnectionFailure)


def test_protocol_errors_are_not_peer_failures() -> None:
    for cls in (errors.FrameError, errors.CodecError, errors.ASGIError, errors.AProtoError,
                errors.MQTTTimeout, errors.SMTPError, errors.IMAPError):
        assert not issubclass(cls, errors.PeerFailure), cls


def test_peer_failures_keep_their_component_bases() -> None:
    # mtaio's programs catch MQTTError around a publish, and ProtocolError is above it there.
    assert issubclass(errors.MQTTNotConnected, errors.MQTTError)
    assert issubclass(errors.MQTTConnectError, errors.MQTTError)
    assert issubclass(errors.MQTTError, errors.ProtocolError)
    assert issubclass(errors.RemoteException, errors.ChannelError)
    assert issubclass(KafkaConnectionError, KafkaError)
    closed = errors.ChannelClosed("gone")
    assert isinstance(closed, (trio.BrokenResourceError, ConnectionResetError))
    down = KafkaConnectionError("down", bootstrap_servers="127.0.0.1:9092")
    assert isinstance(down, trio.BrokenResourceError)
    assert down.bootstrap_servers == "127.0.0.1:9092"
    assert isinstance(ConnectionClosed("eof"), EOFError)


def test_a_connection_failure_is_caught_by_the_branch_and_keeps_its_values() -> None:
    with pytest.raises(errors.ConnectionFailure) as info:
        raise errors.MQTTConnectError("refused", reason_code=135)
    assert info.value.reason_code == 135  # type: ignore[attr-defined]
    remote = errors.RemoteException("peer", "Traceback...", "ValueError")
    assert (remote.origin, remote.remote_type, remote.fault) == ("peer", "ValueError", "remote")
    assert errors.MQTTNotConnected().fault == "local"


def test_the_branches_are_exported_at_the_top() -> None:
    assert trionet.PeerFailure is errors.PeerFailure
    assert trionet.ConnectionFailure is errors.ConnectionFailure
