r"""The communicator the filter talks to.

A ``Comm`` offers the few collectives a sharded particle filter needs. ``LocalComm`` is the
single-process case (every collective is the identity); a torch.distributed implementation
provides the same methods over a process group.

Shards: ``N`` particles over ``P`` ranks, rank ``r`` holding ``shard_sizes(N, P)[r]`` of them
(the first ``N mod P`` ranks hold one more).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


def shard_sizes(n: int, p: int) -> list[int]:
    """Particles per rank: ``n // p`` plus one for the first ``n % p`` ranks."""
    return [n // p + (1 if r < n % p else 0) for r in range(p)]


def shard_start(n: int, p: int, rank: int) -> int:
    """Global index of rank ``rank``'s first particle in the initial contiguous layout."""
    return sum(shard_sizes(n, p)[:rank])


class Comm(Protocol):
    rank: int
    size: int
    device: torch.device

    def all_gather(self, t: Tensor) -> list[Tensor]:
        """Every rank's ``t`` (first dimensions may differ between ranks), in rank order."""
        ...

    def all_reduce(self, t: Tensor) -> Tensor:
        """Elementwise sum of ``t`` over ranks (same shape on every rank)."""
        ...

    def exchange(self, sends: dict[int, Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> dict[int, Tensor]:
        """Point-to-point: send ``sends[dst]`` (``[k, *shape]``) to rank ``dst``; return what arrived, by source."""
        ...

    def barrier(self) -> None: ...


class LocalComm:
    """One process: collectives are identities."""

    rank = 0
    size = 1

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def all_gather(self, t: Tensor) -> list[Tensor]:
        return [t]

    def all_reduce(self, t: Tensor) -> Tensor:
        return t

    def exchange(self, sends: dict[int, Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> dict[int, Tensor]:
        if any(k != 0 for k in sends):
            raise ValueError("LocalComm can only exchange with rank 0")
        return dict(sends)

    def barrier(self) -> None:
        pass


class TimedComm:
    """A ``Comm`` proxy that adds the wall time spent in collectives to ``seconds``."""

    def __init__(self, inner: Comm):
        self.inner = inner
        self.rank, self.size, self.device = inner.rank, inner.size, inner.device
        self.seconds = 0.0

    def _timed(self, fn, *args):
        import time

        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def all_gather(self, t: Tensor) -> list[Tensor]:
        return self._timed(self.inner.all_gather, t)

    def all_reduce(self, t: Tensor) -> Tensor:
        return self._timed(self.inner.all_reduce, t)

    def exchange(self, sends: dict[int, Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> dict[int, Tensor]:
        return self._timed(self.inner.exchange, sends, shape, dtype)

    def barrier(self) -> None:
        self._timed(self.inner.barrier)
