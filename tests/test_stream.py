"""Prefetching: the next item is read while the caller computes; bounded; errors surface."""

import threading
import time

import pytest

from pipeline.data.stream import Prefetcher


def test_reads_overlap_compute_and_memory_is_bounded():
    alive, peak, lock = [0], [0], threading.Lock()

    class Item:
        def __init__(self, k):
            self.k = k
            with lock:
                alive[0] += 1
                peak[0] = max(peak[0], alive[0])

        def __del__(self):
            with lock:
                alive[0] -= 1

    def load(k):
        time.sleep(0.03)
        return Item(k)

    with Prefetcher(load, last=12, depth=1) as p:
        for k in range(1, 13):
            item = p.get(k)
            assert item.k == k and p.held <= 1
            del item
            time.sleep(0.06)  # "compute": longer than a read
        waits = p.stats.wait
    assert waits[0] > 0.02  # the first read cannot be hidden
    assert sum(waits[1:]) < 0.25 * sum(p.stats.read[1:])  # the rest were read in the background
    assert peak[0] <= 3  # current + one ahead (+ one being dropped), whatever the length


def test_out_of_order_and_resume_start():
    calls = []

    def load(k):
        calls.append(k)
        return k * 10

    p = Prefetcher(load, last=5, depth=2)
    assert p.get(3) == 30  # a resumed run starts in the middle
    assert p.get(4) == 40 and p.get(5) == 50
    assert p.get(1) == 10  # going back reads in the foreground
    p.close()
    assert calls.count(3) == 1 and calls.count(4) == 1 and 6 not in calls


def test_background_error_is_raised_by_get():
    def load(k):
        if k == 2:
            raise ValueError("cycle 2 is broken")
        return k

    with Prefetcher(load, last=3) as p:
        assert p.get(1) == 1
        with pytest.raises(ValueError, match="cycle 2"):
            p.get(2)


def test_depth_zero_reads_in_the_foreground():
    p = Prefetcher(lambda k: k, last=3, depth=0)
    assert [p.get(k) for k in (1, 2, 3)] == [1, 2, 3] and p.stats.foreground == 3
