r"""Streaming inputs: the next cycle's data is read in the background while this one computes.

:class:`Prefetcher` wraps a ``load(k)`` function (for the gridded problem: read cycle ``k``'s
observations and reference). ``get(k)`` returns item ``k`` (waiting only if its read has not
finished) and starts reading ``k + 1 .. k + depth`` on one background thread. At most
``depth + 1`` items are held at any time, so memory stays bounded whatever the window length;
items before ``k`` are dropped. Any cycle order works (a resumed run starts in the middle):
a ``get`` of an item not prefetched reads it in the foreground.

``stats`` records, per ``get``, the seconds the caller waited (``wait``) and the seconds the read
took (``read``): ``sum(wait) / cycle time`` is the fraction of the cycle that waits on input
(``diffda bench io``). An exception in a background read is raised by the ``get`` of that item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class StreamStats:
    wait: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    prefetched: int = 0
    foreground: int = 0

    @property
    def wait_seconds(self) -> float:
        return float(sum(self.wait))

    @property
    def read_seconds(self) -> float:
        return float(sum(self.read))


class Prefetcher(Generic[T]):
    """Item ``k`` now, ``k + 1 .. k + depth`` read in the background. ``last``: the final index."""

    def __init__(self, load: Callable[[int], T], last: int, depth: int = 1, name: str = "input"):
        self._load = load
        self.last = last
        self.depth = max(0, int(depth))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffda-prefetch-{name}") if self.depth else None
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self.stats = StreamStats()

    def _timed(self, k: int) -> tuple[T, float]:
        start = time.perf_counter()
        item = self._load(k)
        return item, time.perf_counter() - start

    def _submit(self, k: int) -> None:
        if self._pool is not None and k <= self.last and k not in self._futures:
            self._futures[k] = self._pool.submit(self._timed, k)

    def get(self, k: int) -> T:
        start = time.perf_counter()
        with self._lock:
            for old in [i for i in self._futures if i < k or i > k + self.depth]:
                self._futures.pop(old).cancel()
            fut = self._futures.pop(k, None)
        if fut is not None:
            item, read = fut.result()
            self.stats.prefetched += 1
        else:
            item, read = self._timed(k)
            self.stats.foreground += 1
        wait = time.perf_counter() - start
        with self._lock:
            for j in range(k + 1, k + 1 + self.depth):
                self._submit(j)
        self.stats.wait.append(wait)
        self.stats.read.append(read)
        return item

    @property
    def held(self) -> int:
        """Items read or being read ahead (bounded by ``depth``)."""
        return len(self._futures)

    def close(self) -> None:
        with self._lock:
            for f in self._futures.values():
                f.cancel()
            self._futures.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
