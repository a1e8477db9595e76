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


async def test_grace_lets_a_cancelled_call_finish_before_interrupting() -> None:
    """With ``grace``, a call that finishes after the cancellation (here: its reply is sent only
    then) is not interrupted: the socket stays usable, and the caller is cancelled all the same.
    A call still blocked when the grace runs out is interrupted."""
    a, b = socket.socketpair()
    with a, b:
        interrupter = SocketInterrupter()
        interrupter.attach(a)
        scope = trio.CancelScope()

        async def cancel_then_reply() -> None:
            await trio.sleep(0.05)
            scope.cancel()
            await trio.lowlevel.checkpoint()
            b.send(b"reply")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_then_reply)
            with scope:
                await run_blocking(a.recv, 10, on_cancel=interrupter.interrupt, grace=30)
        assert scope.cancelled_caught
        assert not interrupter.interrupted
        b.send(b"more")
        assert a.recv(10) == b"more"  # still in one piece

        with trio.CancelScope() as scope:
            scope.cancel()
            await run_blocking(a.recv, 10, on_cancel=interrupter.interrupt, grace=0.01)
        assert scope.cancelled_caught
        assert interrupter.interrupted
        assert a.recv(10) == b""
