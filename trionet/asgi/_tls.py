"""HTTPS for :func:`~trionet.asgi.serve` from trionet's ``tls=`` vocabulary, with certificate
reload.

Both trio workers (trionet's and Hypercorn's) ask their ``Config`` once for one
:class:`ssl.SSLContext` and wrap every accepted connection with it (``SSLContext.wrap_bio``,
through :class:`trio.SSLStream`). To let a :class:`~trionet.tls.CertificateReloader` reach new
connections, the context they get is a :class:`_PerConnectionContext`: its ``wrap_bio`` asks the
``tls=`` source for the current context and wraps the connection with *that* one. So each new
connection gets everything of the current context (certificate, CAs, ``verify_mode``, versions),
while open connections keep the context they started with.

(The other technique, a fixed listening context whose ``sni_callback`` switches
``ssl_object.context``, carries over only the certificate and the CA store: OpenSSL copies
``verify_mode`` and the protocol versions into the connection before the callback runs, so a
reload that tightens them would not apply.)
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .._tls import server_tls_source
from ..errors import ConfigurationError
from ..tls import CertificateReloader, ServerTLSArgument, TLSOptions

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["config_with_tls"]


class _PerConnectionContext(ssl.SSLContext):
    """A server context that wraps each connection with its source's current context."""

    _source: Callable[[], ssl.SSLContext]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self._source().wrap_bio(incoming, outgoing, server_side, server_hostname,
                                       session)

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._source().wrap_socket(sock, *args, **kwargs)


def _with_alpn(source: Callable[[], ssl.SSLContext], alpn: list[str]
               ) -> Callable[[], ssl.SSLContext]:
    """*source*, with the server's ALPN protocols set once on each new context it gives."""
    prepared: list[ssl.SSLContext] = []

    def current() -> ssl.SSLContext:
        context = source()
        if not prepared or prepared[0] is not context:
            context.set_alpn_protocols(alpn)
            prepared[:] = [context]
        return context

    return current


@functools.cache
def _tls_config_class() -> type[Config]:
    from hypercorn.config import Config

    class TLSConfig(Config):
        """A Hypercorn ``Config`` whose TLS context comes from ``tls=``, not from files."""

        _trionet_context: ssl.SSLContext

        @property
        def ssl_enabled(self) -> bool:
            return True

        def create_ssl_context(self) -> ssl.SSLContext:
            return self._trionet_context

    return TLSConfig


def config_with_tls(config: Config, tls: ServerTLSArgument) -> Config:
    """A copy of *config* whose workers serve HTTPS with the context of *tls*, asked for per
    connection (so a :class:`~trionet.tls.CertificateReloader`'s reload reaches the next
    connection).

    A context trionet builds (from :class:`~trionet.tls.TLSOptions`, or a reloader's) gets
    the config's ALPN protocols (``h2``, ``http/1.1``); an :class:`ssl.SSLContext` given as
    it is is used as it is.

    Raises:
        ConfigurationError: the config names a certificate or CA file too, or *tls* is not a
            server's ``tls=`` argument.
        OSError, ssl.SSLError: the files of a :class:`~trionet.tls.TLSOptions` are not usable.
    """
    if any(value is not None for value in (config.certfile, config.keyfile, config.ca_certs)):
        # The config's TLS files would be ignored without a word: refuse the mix.
        raise ConfigurationError(
            "give serve() tls= or a config with certfile/keyfile/ca_certs, not both"
        )
    source = server_tls_source(tls)
    if source is None:
        raise ConfigurationError("tls= of serve() is None: there is no TLS to configure")
    if isinstance(tls, TLSOptions | CertificateReloader):
        source = _with_alpn(source, list(config.alpn_protocols))
    context = _PerConnectionContext(ssl.PROTOCOL_TLS_SERVER)
    context._source = source
    cls = _tls_config_class()
    copy = cast(Any, cls.__new__(cls))
    copy.__dict__.update(config.__dict__)
    copy._trionet_context = context
    return cast("Config", copy)
