"""SocketInterrupter: cancellation ends a blocking socket call on a worker thread at once."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio

from trionet._threads import SocketInterrupter, run_blocking


async def test_interrupt_unblocks_a_recv_and_stays_interrupted() -> None:
    a, b = socket.socketpair()
    with a, b:
        interrupter = SocketInterrupter()
        interrupter.attach(a)
        assert not interrupter.interrupted
        with trio.move_on_after(0.2) as scope:
            await run_blocking(a.recv, 10, on_cancel=interrupter.interrupt)
        assert scope.cancelled_caught
        assert interrupter.interrupted
        assert a.recv(10) == b""  # shut down for good
        interrupter.interrupt()  # idempotent
        c, d = socket.socketpair()
        with c, d:
            with pytest.raises(InterruptedError):
                interrupter.attach(c)
            made = []
            with pytest.raises(InterruptedError):
                interrupter.replace(lambda: made.append(1))
            assert made == []


async def test_interrupt_before_anything_is_attached() -> None:
    interrupter = SocketInterrupter()
    interrupter.interrupt()  # nothing to shut down yet
    a, b = socket.socketpair()
    with a, b, pytest.raises(InterruptedError):
        interrupter.attach(a)


async def test_interrupt_a_tls_handshake_after_replace() -> None:
    """The TLS wrap swaps the socket object; the interrupter follows it."""
    a, b = socket.socketpair()
    with a, b:
        interrupter = SocketInterrupter()
        interrupter.attach(a)
        context = ssl.create_default_context()
        wrapped = interrupter.replace(
            lambda: context.wrap_socket(a, server_hostname="peer.test",
                                        do_handshake_on_connect=False)
        )
        with wrapped:
            # the peer never answers the ClientHello
            with trio.move_on_after(0.2) as scope:
                await run_blocking(wrapped.do_handshake, on_cancel=interrupter.interrupt)
            assert scope.cancelled_caught
            assert interrupter.interrupted
