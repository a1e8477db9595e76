"""FramedStream over in-memory streams, loopback TCP and Unix sockets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing

from trionet.errors import FrameError, FrameTooLarge, IncompleteFrame
from trionet.framing import FramedStream


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts ``send_all`` calls (a test double, not a mock)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.send_all_calls = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.send_all_calls += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:  # pragma: no cover - unused
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.inner.aclose()


def framed_pair(**kwargs: object) -> tuple[FramedStream, FramedStream]:
    a, b = trio.testing.memory_stream_pair()
    return FramedStream(a, **kwargs), FramedStream(b, **kwargs)  # type: ignore[arg-type]


async def test_round_trip_memory() -> None:
    a, b = framed_pair()
    await a.send_frame(b"hello")
    await a.send_frame(b"")
    assert await b.receive_frame() == b"hello"
    assert await b.receive_frame() == b""


async def test_async_iteration_ends_at_clean_eof() -> None:
    a, b = framed_pair()
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            for i in range(5):
                await a.send_frame(str(i).encode())
            await a.aclose()

        nursery.start_soon(writer)
        assert [f async for f in b] == [b"0", b"1", b"2", b"3", b"4"]
        with pytest.raises(trio.EndOfChannel):
            await b.receive_frame()


async def test_eof_mid_frame_raises_incomplete() -> None:
    left, right = trio.testing.memory_stream_pair()
    framed = FramedStream(right)
    await left.send_all(b"\x00\x00\x00\x10partial")
    await left.aclose()
    with pytest.raises(IncompleteFrame) as info:
        await framed.receive_frame()
    assert info.value.received == 11
    # Sticky: the framing is lost for good.
    with pytest.raises(IncompleteFrame):
        await framed.receive_frame()


async def test_oversize_header_rejected_without_reading_payload() -> None:
    left, right = trio.testing.memory_stream_pair()
    framed = FramedStream(right, max_frame_size=1024)
    await left.send_all(b"\xff\xff\xff\xff")  # announces 4 GiB, sends nothing else
    with pytest.raises(FrameTooLarge) as info:
        await framed.receive_frame()
    assert info.value.size == 2**32 - 1


async def test_send_oversize_refused_and_nothing_sent() -> None:
    a, b = framed_pair(max_frame_size=8)
    with pytest.raises(FrameTooLarge) as info:
        await a.send_frame(b"123456789")
    assert info.value.fault == "local"
    await a.send_frame(b"ok")
    assert await b.receive_frame() == b"ok"


async def test_extra_header_round_trip() -> None:
    a, b = framed_pair(header_size=2, byteorder="little", extra_header_size=2)
    await a.send_frame(b"{}", extra=b"\x16\x00")
    assert await b.receive_frame() == b"\x16\x00{}"


async def test_bad_length_below_extra_header() -> None:
    left, right = trio.testing.memory_stream_pair()
    framed = FramedStream(right, extra_header_size=2)
    await left.send_all(b"\x00\x00\x00\x01x")
    with pytest.raises(FrameError):
        await framed.receive_frame()


async def test_concurrent_receivers_conflict() -> None:
    a, b = framed_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_frame)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_frame()
        await a.send_frame(b"x")


async def test_concurrent_senders_are_coalesced() -> None:
    """100 tasks send while the first write is blocked: they go out in far fewer writes."""
    left, right = trio.testing.lockstep_stream_pair()
    counting = CountingStream(left)
    sender = FramedStream(counting)
    receiver = FramedStream(right)
    received: list[bytes] = []

    async def reader() -> None:
        for _ in range(100):
            received.append(await receiver.receive_frame())

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(sender.send_frame, f"m{i}".encode())
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reader)
    assert sorted(received) == sorted(f"m{i}".encode() for i in range(100))
    assert counting.send_all_calls <= 3


async def test_cancelled_waiting_sender_frame_still_sent() -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = FramedStream(left)
    receiver = FramedStream(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send_frame, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            # Queued behind the blocked writer, then cancelled while waiting.
            await sender.send_frame(b"second")
        assert scope.cancelled_caught
        assert await receiver.receive_frame() == b"first"
        assert await receiver.receive_frame() == b"second"
        nursery.start_soon(sender.send_frame, b"third")
        assert await receiver.receive_frame() == b"third"


async def test_writer_cancelled_before_sending_hands_over() -> None:
    """A sender cancelled before its first byte leaves the stream usable and sends nothing."""
    a, b = framed_pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await a.send_frame(b"never")
    assert scope.cancelled_caught
    await a.send_frame(b"after")
    assert await b.receive_frame() == b"after"


async def test_writer_cancelled_mid_send_breaks_stream() -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = FramedStream(left)
    receiver = FramedStream(right)

    async with trio.open_nursery() as nursery:

        async def blocked_writer() -> None:
            with trio.move_on_after(0.01):
                await sender.send_frame(b"x" * 10)

        nursery.start_soon(blocked_writer)
        # Read a single byte so the write is partial, then let the deadline fire.
        await right.receive_some(1)
    with pytest.raises(trio.BrokenResourceError, match="earlier send"):
        await sender.send_frame(b"y")
    del receiver


async def test_waiters_fail_when_write_fails() -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = FramedStream(left)
    errors: list[BaseException] = []

    async def send(data: bytes) -> None:
        try:
            await sender.send_frame(data)
        except trio.BrokenResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(send, bytes([i]))
        await trio.testing.wait_all_tasks_blocked()
        await right.aclose()
    assert len(errors) == 3


async def test_closed_framed_stream_refuses() -> None:
    a, _b = framed_pair()
    await a.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await a.send_frame(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_frame()


# -- real sockets -------------------------------------------------------------------------------


async def echo_handler(stream: trio.abc.Stream) -> None:
    framed = FramedStream(stream)
    async with framed:
        try:
            async for frame in framed:
                await framed.send_frame(frame)
        except (FrameError, trio.BrokenResourceError):
            pass


async def exercise(client: FramedStream) -> None:
    payloads = [b"", b"a", b"\x00" * 70_000, os.urandom(3 * 1024 * 1024)]
    async with trio.open_nursery() as nursery:
        for p in payloads:
            nursery.start_soon(client.send_frame, p)
        got = [await client.receive_frame() for _ in payloads]
    assert sorted(got) == sorted(payloads)


async def test_tcp_loopback() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo_handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with FramedStream(await trio.open_tcp_stream("127.0.0.1", port)) as client:
            await exercise(client)
        nursery.cancel_scope.cancel()


async def test_tcp_server_survives_bad_client() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo_handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        bad = await trio.open_tcp_stream("127.0.0.1", port)
        await bad.send_all(b"\xff\xff\xff\xff garbage")  # 4 GiB announced: the handler drops it
        assert await bad.receive_some(10) == b""
        await bad.aclose()
        async with FramedStream(await trio.open_tcp_stream("127.0.0.1", port)) as good:
            await good.send_frame(b"still serving")
            assert await good.receive_frame() == b"still serving"
        nursery.cancel_scope.cancel()


@pytest.fixture
async def unix_path() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="tn-") as tmp:
        yield os.path.join(tmp, "s.sock")


async def test_unix_socket(unix_path: str) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(unix_path)
    sock.listen()
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, echo_handler, [listener]))
        async with FramedStream(await trio.open_unix_socket(unix_path)) as client:
            await exercise(client)
        nursery.cancel_scope.cancel()


class HookStream(CountingStream):
    """Waits for ``gate`` before each write; calls ``after_send`` hooks once it completed."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.gate = trio.Event()
        self.after_send: list[object] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.gate.wait()
        await super().send_all(data)
        while self.after_send:
            hook = self.after_send.pop()
            assert callable(hook)
            hook()


async def test_writer_cancelled_between_batches_hands_over_to_waiter() -> None:
    """The writer finishes its batch, is cancelled before the next: a waiter takes over."""
    left, right = trio.testing.memory_stream_pair()
    hooked = HookStream(left)
    sender = FramedStream(hooked)
    receiver = FramedStream(right)
    writer_scope = trio.CancelScope()

    async def first_writer() -> None:
        with writer_scope:
            await sender.send_frame(b"first")

    # The first write waits on the gate until a second sender has queued behind it.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_writer)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(sender.send_frame, b"second")
        await trio.testing.wait_all_tasks_blocked()
        hooked.after_send.append(writer_scope.cancel)
        hooked.gate.set()
    assert writer_scope.cancelled_caught
    assert await receiver.receive_frame() == b"first"
    assert await receiver.receive_frame() == b"second"
    assert hooked.send_all_calls == 2


async def test_send_frames_with_extra_and_receive_nowait() -> None:
    a, b = framed_pair(header_size=1, extra_header_size=2)
    await a.send_frames([b"{}", b"[]"], extra=b"\x16\x00")
    with pytest.raises(trio.WouldBlock):
        b.receive_frame_nowait()
    assert await b.receive_frame() == b"\x16\x00{}"
    assert b.receive_frame_nowait() == b"\x16\x00[]"
    with pytest.raises(FrameTooLarge):
        await a.send_frames([b"ok", b"x" * 300], extra=b"\x16\x00")
