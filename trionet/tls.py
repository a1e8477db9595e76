"""The ``tls=`` vocabulary of trionet's clients and servers.

A client's ``tls=`` argument takes:

* ``True``: TLS with :func:`ssl.create_default_context`, which verifies the server's
  certificate chain against the system's CAs and its host name;
* an :class:`ssl.SSLContext`: exactly these settings;
* a :class:`TLSOptions`: a verified context built from a few file names (a private CA, a client
  certificate for mutual TLS);
* ``None`` or ``False``: no TLS (where a component allows it).

:func:`client_context` turns any of them into an :class:`ssl.SSLContext` (or None).

A server's ``tls=`` argument takes an :class:`ssl.SSLContext` (server side), a
:class:`TLSOptions` naming the server's certificate and key (and, for mutual TLS, the CA of the
client certificates), or a :class:`CertificateReloader` whose certificate can be replaced while
the server runs; :func:`server_context` builds the context.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
from dataclasses import dataclass
from typing import TypeAlias

import trio

from .errors import ConfigurationError

__all__ = ["CertificateReloader", "ServerTLSArgument", "TLSArgument", "TLSOptions",
           "client_context", "server_context"]

_logger = logging.getLogger("trionet.tls")


@dataclass(frozen=True)
class TLSOptions:
    """A verified TLS context described by file names, for a client or a server.

    Attributes:
        ca_file: PEM file of the CAs to trust: for a client, the CAs of the server's
            certificate instead of the system's (a private CA); for a server, the CAs of the
            client certificates it accepts (mutual TLS).
        cert_file: PEM file of this side's certificate, with its chain: a client certificate
            (mutual TLS), or the server's certificate (required for a server). Its key may be
            in the same file.
        key_file: PEM file of the certificate's private key (if not in ``cert_file``).
        key_password: the password of an encrypted private key.
        minimum_version: the oldest TLS version accepted (default TLS 1.2).
        require_client_cert: servers only: refuse a client that presents no certificate
            signed by ``ca_file`` (mutual TLS). Without it, a server with a ``ca_file``
            verifies a client certificate when one is sent and accepts clients without one.

    Verification is never switched off here: for that (never in production), build the
    :class:`ssl.SSLContext` yourself.
    """

    ca_file: str | os.PathLike[str] | None = None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None
    key_password: str | None = None
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    require_client_cert: bool = False

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

    def server_context(self) -> ssl.SSLContext:
        """A new server context: this certificate, and client certificates checked against
        ``ca_file`` (required with ``require_client_cert``).

        Raises:
            ConfigurationError: no ``cert_file``, or ``require_client_cert`` without
                ``ca_file``.
            OSError: a file cannot be read.
            ssl.SSLError: a file is not valid PEM, or the key does not match the certificate.
        """
        if self.cert_file is None:
            raise ConfigurationError("a TLS server needs a cert_file (its certificate)")
        if self.require_client_cert and self.ca_file is None:
            raise ConfigurationError("require_client_cert needs a ca_file (the clients' CA)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = self.minimum_version
        context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
        if self.ca_file is not None:
            context.load_verify_locations(cafile=self.ca_file)
            context.verify_mode = (ssl.CERT_REQUIRED if self.require_client_cert
                                   else ssl.CERT_OPTIONAL)
        return context


class CertificateReloader:
    """A server's TLS settings whose files can be read again while the server runs.

    Pass it as a server's ``tls=``: each new connection uses the context of the latest
    successful :meth:`reload`; connections already open keep the one they started with::

        reloader = CertificateReloader(TLSOptions(cert_file="server.pem"))
        await nursery.start(partial(trionet.channel.start_server, addr, handle, tls=reloader))
        ...                     # the certificate files are renewed
        reloader.reload()       # new connections get the new certificate

    Args:
        options: the files to read (see :meth:`TLSOptions.server_context`); read once here,
            so a broken file fails at once.
    """

    def __init__(self, options: TLSOptions) -> None:
        self._options = options
        self._context = options.server_context()
        #: How many reloads succeeded.
        self.reloads = 0

    @property
    def options(self) -> TLSOptions:
        """The options of the current context."""
        return self._options

    @property
    def context(self) -> ssl.SSLContext:
        """The server context new connections get."""
        return self._context

    def reload(self, options: TLSOptions | None = None) -> None:
        """Read the files again (or those of *options*) and use them for new connections.

        If reading fails, the error is raised and the current context stays in use.

        Raises:
            ConfigurationError, OSError, ssl.SSLError: as :meth:`TLSOptions.server_context`.
        """
        options = self._options if options is None else options
        self._context = options.server_context()
        self._options = options
        self.reloads += 1

    async def reload_on_signal(
        self,
        signum: int = signal.SIGHUP,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Reload each time the process receives *signum* (SIGHUP by default), until
        cancelled; start it with ``nursery.start``. A reload that fails is logged (on the
        ``trionet.tls`` logger) and the previous certificate stays in use.
        """
        with trio.open_signal_receiver(signum) as signals:
            task_status.started()
            async for _ in signals:
                try:
                    self.reload()
                except (ConfigurationError, OSError, ssl.SSLError) as exc:
                    _logger.error("TLS certificate reload failed, keeping the old one: %s", exc)
                else:
                    _logger.info("TLS certificate reloaded from %s", self._options.cert_file)


#: What a client's ``tls=`` argument accepts.
TLSArgument: TypeAlias = "bool | ssl.SSLContext | TLSOptions | None"

#: What a server's ``tls=`` argument accepts (None: plain TCP).
ServerTLSArgument: TypeAlias = "ssl.SSLContext | TLSOptions | CertificateReloader | None"


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


def server_context(tls: ServerTLSArgument, *, what: str = "tls") -> ssl.SSLContext | None:
    """The server :class:`ssl.SSLContext` a server's ``tls=`` argument stands for now (None:
    no TLS); for a :class:`CertificateReloader`, its current context.

    Raises:
        ConfigurationError: *tls* is none of the accepted kinds (``True`` is not: a server
            needs a certificate), or its :class:`TLSOptions` have no ``cert_file``.
    """
    if tls is None:
        return None
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, TLSOptions):
        return tls.server_context()
    if isinstance(tls, CertificateReloader):
        return tls.context
    raise ConfigurationError(
        f"{what} of a server must be None, an ssl.SSLContext, a trionet.tls.TLSOptions (with "
        f"its cert_file) or a trionet.tls.CertificateReloader, not {type(tls).__name__}"
    )
