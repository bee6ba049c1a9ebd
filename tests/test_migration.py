"""The minimal-migration plan (pure) and ``migrate`` over in-process ranks (threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.distributed.comm import LocalComm, shard_sizes
from pipeline.filters.resampling import systematic
from pipeline.distributed.migration import (
    gather_by_id,
    lower_bound,
    migrate,
    plan_migration,
)

# ---------------------------------------------------------------------------------------------
# strategies


@st.composite
def owners_and_targets(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    p = draw(st.integers(1, 8))
    n = draw(st.integers(0, 60))
    owner = np.array(draw(st.lists(st.integers(0, p - 1), min_size=n, max_size=n)), dtype=np.int64)
    if draw(st.booleans()):
        targets = shard_sizes(n, p)
    else:  # any composition of n into p parts
        cuts = sorted(draw(st.lists(st.integers(0, n), min_size=p - 1, max_size=p - 1)))
        targets = list(np.diff([0, *cuts, n]))
    return owner, [int(t) for t in targets]


# ---------------------------------------------------------------------------------------------
# the plan


@settings(max_examples=300, deadline=None)
@given(owners_and_targets())
def test_plan_properties(case: tuple[np.ndarray, list[int]]) -> None:
    owner, targets = case
    p = len(targets)
    plan = plan_migration(owner, targets)
    dest = plan.dest
    assert dest.shape == owner.shape
    # particles conserved, each rank ends with its share
    assert np.bincount(dest, minlength=p).tolist() == targets
    # moved is the lower bound and counts exactly the offspring that change rank
    assert plan.moved == int((dest != owner).sum()) == lower_bound(owner, targets)
    o = np.bincount(owner, minlength=p)
    for r in range(p):
        mine = np.flatnonzero(owner == r)
        kept = mine[dest[mine] == r]
        # owner-kept maximal: a rank keeps min(o_r, T_r) of its own offspring, the lowest j's
        assert kept.size == min(o[r], targets[r])
        assert kept.tolist() == mine[: kept.size].tolist()
        # a rank never both sends and receives
        receives = np.any((dest == r) & (owner != r))
        sends = np.any((owner == r) & (dest != r))
        assert not (receives and sends)
    # staircase: at most (#senders + #receivers - 1) distinct (source, destination) pairs
    moving = dest != owner
    pairs = {(int(a), int(b)) for a, b in zip(owner[moving], dest[moving])}
    senders = len({a for a, _ in pairs})
    receivers = len({b for _, b in pairs})
    assert len(pairs) <= max(0, senders + receivers - 1)
    # deterministic
    assert np.array_equal(plan_migration(owner.tolist(), targets).dest, dest)


def test_plan_example() -> None:
    # rank 2 has 4 offspring but may hold 3; rank 0 has 3 of its own and must hold 4
    owner = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]
    plan = plan_migration(owner, [4, 3, 3])
    assert plan.dest.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 0, 0]
    assert plan.moved == 1


def test_plan_all_on_one_rank() -> None:
    # one heavy particle on rank 1: every offspring but rank 1's share must move
    owner = np.full(10, 1)
    plan = plan_migration(owner, shard_sizes(10, 3))  # [4, 3, 3]
    assert plan.dest.tolist() == [1, 1, 1, 0, 0, 0, 0, 2, 2, 2]
    assert plan.moved == 7 == lower_bound(owner, [4, 3, 3])


def test_plan_nothing_moves_when_balanced() -> None:
    owner = np.repeat(np.arange(4), 5)
    plan = plan_migration(np.random.default_rng(0).permutation(owner), [5] * 4)
    assert plan.moved == 0


@pytest.mark.parametrize("owner, targets", [([0, 1], [1, 2]), ([0, 3], [1, 1]), ([0, 0], [3, -1]), ([[0]], [1])])
def test_plan_rejects_bad_input(owner: Any, targets: list[int]) -> None:
    with pytest.raises(ValueError):
        plan_migration(owner, targets)


# ---------------------------------------------------------------------------------------------
# systematic resampling


# ---------------------------------------------------------------------------------------------
# migrate, one process


def test_migrate_local() -> None:
    g = torch.Generator().manual_seed(0)
    n = 12
    ids = torch.randperm(n, generator=g)
    x = torch.randn(n, 3, 2, generator=g)
    tag = ids * 10
    anc = systematic(torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0), 0.3).numpy()
    res = migrate(LocalComm(), ids, x, anc, tag)
    row = torch.empty(n, dtype=torch.int64)
    row[ids] = torch.arange(n)
    assert res.ids.tolist() == list(range(n))
    assert torch.equal(res.x, x[row[anc]])
    assert torch.equal(res.extras[0], torch.as_tensor(anc) * 10)
    assert res.plan.moved == 0


def test_migrate_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="permutation"):
        migrate(LocalComm(), torch.tensor([0, 0, 2]), torch.zeros(3, 1), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="rows"):
        migrate(LocalComm(), torch.tensor([0, 1, 2]), torch.zeros(2, 1), np.array([0, 1, 2]))


# ---------------------------------------------------------------------------------------------
# migrate over P in-process ranks: a Comm on threads


class _Shared:
    def __init__(self, p: int):
        self.p = p
        self.barrier = threading.Barrier(p, timeout=30)
        self.slots: list[Any] = [None] * p


class ThreadComm:
    """A ``Comm`` for ``P`` threads of one process (tests only): slots exchanged between barriers."""

    def __init__(self, shared: _Shared, rank: int):
        self.s, self.rank, self.size, self.device = shared, rank, shared.p, torch.device("cpu")

    def _swap(self, item: Any) -> list[Any]:
        self.s.slots[self.rank] = item
        self.s.barrier.wait()
        out = list(self.s.slots)
        self.s.barrier.wait()
        return out

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        return [u.clone() for u in self._swap(t)]

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._swap(t)).sum(0)

    def exchange(self, sends: dict[int, torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> dict[int, torch.Tensor]:
        boxes = self._swap(sends)
        return {src: box[self.rank].clone() for src, box in enumerate(boxes)
                if self.rank in box and (box[self.rank].shape[0] or src == self.rank)}

    def barrier(self) -> None:
        self.s.barrier.wait()


def run_threads(p: int, fn: Callable[[ThreadComm], Any]) -> list[Any]:
    shared = _Shared(p)
    results: list[Any] = [None] * p
    errors: list[BaseException] = []

    def body(r: int) -> None:
        try:
            results[r] = fn(ThreadComm(shared, r))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            shared.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(p)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(0, 2**31 - 1), st.floats(0.1, 30.0))
def test_migrate_matches_single_process(p: int, n: int, seed: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x_all = torch.randn(n, 2, 3, generator=g, dtype=torch.float64)
    flag_all = torch.rand(n, generator=g) > 0.5
    perm = torch.randperm(n, generator=g)
    cuts = sorted(torch.randint(0, n + 1, (p - 1,), generator=g).tolist())
    bounds = [0, *cuts, n]
    w = torch.softmax(temperature * torch.randn(n, generator=g, dtype=torch.float64), 0)
    anc = systematic(w, float(torch.rand((), generator=g, dtype=torch.float64))).numpy()
    owner = np.empty(n, dtype=np.int64)
    for r in range(p):
        owner[perm[bounds[r]:bounds[r + 1]].numpy()] = r
    owner = owner[anc]

    def rank_fn(comm: ThreadComm) -> Any:
        ids = perm[bounds[comm.rank]:bounds[comm.rank + 1]]
        res = migrate(comm, ids, x_all[ids], torch.as_tensor(anc), flag_all[ids])
        return res, gather_by_id(comm, res.ids, res.x, n)

    out = run_threads(p, rank_fn)
    for r, (res, gathered) in enumerate(out):
        assert res.ids.shape[0] == shard_sizes(n, p)[r]
        assert torch.equal(res.x, x_all[anc][res.ids])
        assert torch.equal(res.extras[0], flag_all[anc][res.ids])
        assert res.plan.moved == lower_bound(owner, shard_sizes(n, p))
        assert torch.equal(gathered, x_all[anc])
    assert sorted(torch.cat([res.ids for res, _ in out]).tolist()) == list(range(n))
