"""trionet._threads.Handoff and Guarded: state shared by two threads, one lock each."""

from __future__ import annotations

import threading

from trionet._threads import Guarded, Handoff


def test_handoff_batches_and_counts_what_was_handed_over() -> None:
    handoff: Handoff[int] = Handoff()
    assert handoff.close() == []
    handoff.open([1, 2])
    handoff.add([3])
    assert handoff.steal() == [1, 2, 3]  # another thread takes the batch so far
    assert handoff.steal() == []
    handoff.add([4])
    assert handoff.close() == [4]
    handoff.count(5)
    assert handoff.handed == 9
    assert handoff.close() == []


def test_handoff_loses_and_repeats_nothing_across_threads() -> None:
    handoff: Handoff[int] = Handoff()
    stolen: list[int] = []
    done = threading.Event()

    def thief() -> None:
        while not done.is_set():
            stolen.extend(handoff.steal())
        stolen.extend(handoff.steal())

    thread = threading.Thread(target=thief)
    thread.start()
    kept: list[int] = []
    for batch in range(200):
        handoff.open([batch * 10])
        for n in range(1, 10):
            handoff.add([batch * 10 + n])
        kept.extend(handoff.close())
    done.set()
    thread.join()
    assert sorted(kept + stolen) == list(range(2000))
    assert handoff.handed == 2000


def test_guarded_updates_atomically() -> None:
    counter: Guarded[int] = Guarded(0)

    def bump() -> None:
        for _ in range(5000):
            counter.update(lambda value: (value + 1, None))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value == 20_000
    assert counter.update(lambda value: (value, value * 2)) == 40_000
