"""The framing layer's byte driver (trionet/framing/_driver.py), on its own: the fd fast path,
writev batches, the drainer, flush without a nursery, backpressure and write failures."""

from __future__ import annotations

import socket

import trio
import trio.testing

from trionet.framing._driver import HIGH_WATER, LOW_WATER, StreamDriver


def _small_buffer_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return trio.SocketStream(a), trio.SocketStream(b)


async def _read_all(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, "EOF before every byte arrived"
        data += chunk
    return bytes(data)


async def test_put_goes_out_at_once_or_through_the_drainer() -> None:
    left, right = _small_buffer_pair()
    chunks = [bytes([i]) * 50_000 for i in range(4)]
    async with trio.open_nursery() as nursery:
        driver = StreamDriver(left, nursery)
        assert driver.sock is left.socket  # the fd fast path
        for chunk in chunks:
            assert driver.put(chunk)
        assert driver.out_bytes > 0 and driver.draining  # the kernel did not take it all
        assert await _read_all(right, 200_000) == b"".join(chunks)
        await driver.wait_flushed()
        assert driver.out_bytes == 0 and not driver.out
    await left.aclose()
    await right.aclose()


async def test_queued_chunks_are_flushed_together() -> None:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    driver = StreamDriver(left)  # no nursery: everything fits, so none is needed
    for part in (b"one ", b"two ", b"three"):
        driver.queue(part)
    assert driver.out_bytes == 13
    driver.flush_queued()
    assert not driver.out and driver.out_bytes == 0
    assert await _read_all(right, 13) == b"one two three"
    await left.aclose()
    await right.aclose()


async def test_flush_and_send_all_write_everything_without_a_nursery() -> None:
    left, right = _small_buffer_pair()
    driver = StreamDriver(left)
    big = bytes(range(256)) * 1000
    received: list[bytes] = []

    async def reader() -> None:
        received.append(await _read_all(right, 3 * len(big)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        driver.queue(big)
        driver.queue(big)
        await driver.flush()
        await driver.send_all(big)
    assert received == [big * 3]
    assert driver.out_bytes == 0
    await left.aclose()
    await right.aclose()


async def test_receive_on_a_socket_and_on_other_streams() -> None:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    driver = StreamDriver(right, receive_size=4)
    await left.send_all(b"abcdefgh")
    assert await driver.receive() == b"abcd"  # at most receive_size bytes
    assert await driver.receive() == b"efgh"
    await left.aclose()
    assert await driver.receive() == b""
    await right.aclose()

    one, two = trio.testing.memory_stream_pair()
    other = StreamDriver(two)
    assert other.sock is None  # not a socket: receive_some/send_all
    await one.send_all(b"hello")
    assert await other.receive() == b"hello"
    await other.send_all(b"back")
    assert await one.receive_some() == b"back"


async def test_writers_wait_for_space_until_the_queue_drains() -> None:
    left, right = _small_buffer_pair()
    async with trio.open_nursery() as nursery:
        driver = StreamDriver(left, nursery)
        block = b"x" * 65536
        while driver.out_bytes < HIGH_WATER:
            assert driver.put(block)
        resumed = trio.Event()

        async def writer() -> None:
            await driver.wait_for_space()
            resumed.set()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not resumed.is_set()  # nobody reads: the queue stays full
        while not resumed.is_set():
            assert await right.receive_some(65536)
        assert driver.out_bytes < LOW_WATER
        nursery.cancel_scope.cancel()
    await left.aclose()
    await right.aclose()


async def test_a_failed_write_reports_and_returns_false() -> None:
    a, b = trio.socket.socketpair()
    left = trio.SocketStream(a)
    errors: list[BaseException] = []
    driver = StreamDriver(left, on_error=errors.append)
    b.close()
    assert driver.put(b"into the void") is False
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    assert left.socket.fileno() == -1  # the driver closed the socket
    await left.aclose()
