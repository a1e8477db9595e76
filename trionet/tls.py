"""The ``tls=`` vocabulary of trionet's clients.

A ``tls=`` argument takes:

* ``True``: TLS with :func:`ssl.create_default_context`, which verifies the server's
  certificate chain against the system's CAs and its host name;
* an :class:`ssl.SSLContext`: exactly these settings;
* a :class:`TLSOptions`: a verified context built from a few file names (a private CA, a client
  certificate for mutual TLS);
* ``None`` or ``False``: no TLS (where a component allows it).

:func:`client_context` turns any of them into an :class:`ssl.SSLContext` (or None).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TypeAlias

from .errors import ConfigurationError

__all__ = ["TLSArgument", "TLSOptions", "client_context"]


@dataclass(frozen=True)
class TLSOptions:
    """A verified client TLS context described by file names.

    Attributes:
        ca_file: PEM file of the CAs to trust instead of the system's (a private CA).
        cert_file: PEM file of a client certificate (mutual TLS), with its chain; its key
            may be in the same file.
        key_file: PEM file of the client certificate's private key (if not in ``cert_file``).
        key_password: the password of an encrypted private key.
        minimum_version: the oldest TLS version accepted (default TLS 1.2).

    Verification is never switched off here: for that (never in production), build the
    :class:`ssl.SSLContext` yourself.
    """

    ca_file: str | os.PathLike[str] | None = None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None
    key_password: str | None = None
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2

    def context(self) -> ssl.SSLContext:
        """A new client context with these settings (certificate and host name verified).

        Raises:
            ConfigurationError: ``key_file`` or ``key_password`` without ``cert_file``.
            OSError: a file cannot be read.
            ssl.SSLError: a file is not valid PEM, or the key does not match the certificate.
        """
        if self.cert_file is None and (self.key_file is not None or self.key_password):
            raise ConfigurationError("key_file and key_password need a cert_file")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = self.minimum_version
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
        return context


#: What a ``tls=`` argument accepts.
TLSArgument: TypeAlias = "bool | ssl.SSLContext | TLSOptions | None"


def client_context(tls: TLSArgument, *, what: str = "tls") -> ssl.SSLContext | None:
    """The client :class:`ssl.SSLContext` a ``tls=`` argument stands for (None: no TLS).

    Raises:
        ConfigurationError: *tls* is none of the accepted kinds (*what* names it).
    """
    if tls is None or tls is False:
        return None
    if tls is True:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, TLSOptions):
        return tls.context()
    raise ConfigurationError(
        f"{what} must be True, False, None, an ssl.SSLContext or a trionet.tls.TLSOptions, "
        f"not {type(tls).__name__}"
    )
