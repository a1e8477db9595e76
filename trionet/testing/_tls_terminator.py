"""A TLS terminator for test servers that cannot serve TLS themselves.

It accepts TLS on a loopback port, completes the handshake (optionally requiring a client
certificate signed by a given CA) and relays the decrypted bytes to a plain TCP port on
loopback, in both directions, until either side closes. :class:`~trionet.testing.KafkaTLSBroker`
runs it as its own process in front of a plain Kafka-protocol broker that advertises the
terminator's port, so every connection of a Kafka client goes through TLS::

    python -m trionet.testing._tls_terminator --listen 9093 --upstream 9092 \\
        --cert server.pem --key server.key [--client-ca ca.pem]

Each connection writes one line to standard output: ``tls ok <peer> <version> <client>`` after
a successful handshake (``<client>`` is the client certificate's subject, or ``-``), or
``tls failed <peer> <reason>``. Limits: at most :data:`MAX_CONNECTIONS` connections are served
at once (later ones are accepted and wait for a slot) and :data:`HANDSHAKE_TIMEOUT` seconds per
handshake.
``SIGTERM`` ends the process.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
from typing import Final

import trio

__all__ = ["HANDSHAKE_TIMEOUT", "MAX_CONNECTIONS", "main", "server_context", "terminate"]

#: Seconds a client has to complete the TLS handshake.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Connections relayed at once.
MAX_CONNECTIONS: Final = 256
_HOST: Final = "127.0.0.1"
_CHUNK: Final = 65536


def server_context(cert_file: str, key_file: str, client_ca: str | None) -> ssl.SSLContext:
    """The terminator's context: TLS 1.2 or later; client certificates required with a CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _log(line: str) -> None:
    print(line, flush=True)


def _subject(tls: trio.SSLStream[trio.SocketStream]) -> str:
    cert = tls.getpeercert()
    if not cert:
        return "-"
    names = [f"{key}={value}" for rdn in cert.get("subject", ()) for key, value in rdn]
    return ",".join(names) or "-"


async def _send_alert(tls: trio.SSLStream[trio.SocketStream], stream: trio.SocketStream) -> None:
    """Send the TLS alert OpenSSL wrote when the handshake failed (``certificate required``,
    ``unknown ca``...), as a broker's TLS stack does: trio's SSLStream leaves it unsent in its
    outgoing buffer, and without it the client sees only a closed connection."""
    outgoing = getattr(tls, "_outgoing", None)  # trio's MemoryBIO (a private attribute)
    alert = outgoing.read() if isinstance(outgoing, ssl.MemoryBIO) else b""
    if alert:
        with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError,
                                                         trio.ClosedResourceError):
            await stream.send_all(alert)


async def _relay(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream) -> None:
    while data := await source.receive_some(_CHUNK):
        await sink.send_all(data)


async def _handle(stream: trio.SocketStream, context: ssl.SSLContext, upstream_port: int,
                  limiter: trio.CapacityLimiter) -> None:
    host, port = stream.socket.getpeername()[:2]
    peer = f"{host}:{port}"
    async with limiter, stream:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            _log(f"tls failed {peer} {type(cause).__name__}: {cause}")
            await _send_alert(tls, stream)
            return
        _log(f"tls ok {peer} {tls.version()} {_subject(tls)}")
        try:
            upstream = await trio.open_tcp_stream(_HOST, upstream_port)
        except OSError as exc:
            _log(f"upstream failed {peer} {exc}")
            return
        async with upstream:
            try:
                async with trio.open_nursery() as nursery:
                    async def one_way(source: trio.abc.ReceiveStream,
                                      sink: trio.abc.SendStream) -> None:
                        await _relay(source, sink)
                        nursery.cancel_scope.cancel()  # one side closed: close both

                    nursery.start_soon(one_way, tls, upstream)
                    nursery.start_soon(one_way, upstream, tls)
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # a side went away abruptly: both are closed below
        await trio.aclose_forcefully(tls)


async def terminate(listen_port: int, upstream_port: int, context: ssl.SSLContext, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept TLS on ``127.0.0.1:listen_port`` and relay to ``127.0.0.1:upstream_port``.

    Reports the bound port through ``task_status`` (give 0 to let the kernel choose).
    """
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    listeners = await trio.open_tcp_listeners(listen_port, host=_HOST)
    port: int = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(stream, context, upstream_port, limiter)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(port)


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m trionet.testing._tls_terminator")
    parser.add_argument("--listen", type=int, required=True, help="TLS port on 127.0.0.1")
    parser.add_argument("--upstream", type=int, required=True, help="plain port on 127.0.0.1")
    parser.add_argument("--cert", required=True, help="the server's PEM certificate chain")
    parser.add_argument("--key", required=True, help="the server's PEM private key")
    parser.add_argument("--client-ca", help="require client certificates issued by this CA")
    args = parser.parse_args(argv)
    context = server_context(args.cert, args.key, args.client_ca)
    trio.run(terminate, args.listen, args.upstream, context)


if __name__ == "__main__":
    main()
