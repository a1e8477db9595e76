"""trionet: a trio-native, structured-concurrency networking toolkit.

``import trionet`` needs only trio and msgpack. Components with optional dependencies live in
subpackages (``trionet.asgi``, ``trionet.mqtt``, ``trionet.kafka``) and import them only there.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError, version as _version

from .errors import (
    AProtoError as AProtoError,
    ASGIError as ASGIError,
    ChannelError as ChannelError,
    CodecError as CodecError,
    ConnectionFailure as ConnectionFailure,
    FrameError as FrameError,
    FrameTooLarge as FrameTooLarge,
    KafkaError as KafkaError,
    MailError as MailError,
    MQTTError as MQTTError,
    PeerFailure as PeerFailure,
    ProtocolError as ProtocolError,
    RemoteException as RemoteException,
    TrionetError as TrionetError,
)

try:
    __version__ = _version("trionet")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "AProtoError",
    "ASGIError",
    "ChannelError",
    "CodecError",
    "ConnectionFailure",
    "FrameError",
    "FrameTooLarge",
    "KafkaError",
    "MQTTError",
    "MailError",
    "PeerFailure",
    "ProtocolError",
    "RemoteException",
    "TrionetError",
    "__version__",
]
