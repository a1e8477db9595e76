"""CrossThreadFlag and TransitWindow: the lock-free hand-offs between paho's network thread and
trio (trionet/_threads.py), exercised with real threads."""

from __future__ import annotations

import collections
import threading

import pytest

from trionet._threads import CrossThreadFlag, TransitWindow


def test_cross_thread_flag() -> None:
    flag = CrossThreadFlag()
    assert not flag and not flag.is_set()
    flag.set()
    assert flag.is_set() and bool(flag)
    flag.assign(False)
    assert not flag.is_set()
    assert repr(CrossThreadFlag(True)) == "CrossThreadFlag(True)"

    seen = threading.Event()
    stop = CrossThreadFlag()

    def reader() -> None:
        while not stop.is_set():  # a loop on another thread steered by the flag
            seen.wait(0.001)
        seen.set()

    thread = threading.Thread(target=reader)
    thread.start()
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and seen.is_set()


def test_transit_window_counts() -> None:
    with pytest.raises(ValueError):
        TransitWindow(0)
    window = TransitWindow(2)
    window.sent()
    assert not window.full() and not window.take_waiting()
    window.sent()
    assert window.full() and window.in_transit == 2
    window.taken(2)
    assert window.take_waiting()  # the producer stopped at the limit: wake it, once
    assert not window.take_waiting()
    assert not window.full()


def test_transit_window_bounds_a_producer_thread_and_loses_no_wakeup() -> None:
    window = TransitWindow(8)
    items: collections.deque[int] = collections.deque()
    wake = threading.Event()
    total = 20_000
    high = 0

    def producer() -> None:
        nonlocal high
        n = 0
        while n < total:
            if window.full():
                assert wake.wait(10), "lost wake-up: the consumer never woke the producer"
                wake.clear()
                continue
            items.append(n)
            window.sent()
            n += 1
            high = max(high, window.in_transit)

    thread = threading.Thread(target=producer)
    thread.start()
    got: list[int] = []
    try:
        while len(got) < total:
            while items:
                got.append(items.popleft())
                window.taken()
            if window.take_waiting():
                wake.set()
            if not thread.is_alive() and not items:
                break
            thread.join(0.0001)
    finally:
        thread.join(10)
    assert not thread.is_alive()
    assert got == list(range(total))
    assert high <= window.limit
