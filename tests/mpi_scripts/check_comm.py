"""Checks every Comm collective and ``migrate`` against the single-process answer.

Run under any launcher: ``mpiexec -n P python tests/mpi_scripts/check_comm.py``. Each rank prints
``rank R OK`` (and rank 0 ``ALL OK size=P``); any mismatch raises, which ends the job non-zero.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from pipeline.distributed.comm import shard_sizes
from pipeline.distributed.failure import run_ranked
from pipeline.distributed.launch import Context
from pipeline.distributed.migration import gather_by_id, lower_bound, migrate
from pipeline.filters.resampling import systematic


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def check_collectives(ctx: Context) -> None:
    comm, p, r = ctx.comm, ctx.size, ctx.rank
    # all_gather, variable first dimension (rank 0 may even send nothing in the second test)
    got = comm.all_gather(torch.full((r + 1, 2), float(r), dtype=torch.float64))
    check([g.shape[0] for g in got] == list(range(1, p + 1)), "all_gather counts")
    check(all(torch.all(g == s) for s, g in enumerate(got)), "all_gather values")
    got = comm.all_gather(torch.arange(r, dtype=torch.int64) * 10 + r)
    check(all(torch.equal(g, torch.arange(s) * 10 + s) for s, g in enumerate(got)), "all_gather int64 / empty")
    got = comm.all_gather(torch.tensor([r % 2 == 0, True]))
    check(all(g.dtype == torch.bool and bool(g[0]) == (s % 2 == 0) for s, g in enumerate(got)), "all_gather bool")
    got = comm.all_gather(torch.tensor(float(r) + 0.5, dtype=torch.float64))
    check([float(g) for g in got] == [s + 0.5 for s in range(p)] and got[0].dim() == 0, "all_gather 0-d")
    # all_reduce, float64 kept
    base = torch.linspace(-1.0, 1.0, 7, dtype=torch.float64) / 3.0
    red = comm.all_reduce(base * (r + 1))
    check(red.dtype == torch.float64, "all_reduce dtype")
    check(torch.allclose(red, base * (p * (p + 1) / 2), rtol=1e-15, atol=1e-15), "all_reduce values")
    # exchange: rank s sends (s + 2 d) % 3 rows of [4, 2] to every d, itself included
    def block(s: int, d: int) -> torch.Tensor:
        k = (s + 2 * d) % 3
        return torch.arange(k * 8, dtype=torch.float32).reshape(k, 4, 2) + 100 * s + d
    sends = {d: block(r, d) for d in range(p) if block(r, d).shape[0] or d == r}
    arrived = comm.exchange(sends, (4, 2), torch.float32)
    expect = {s: block(s, r) for s in range(p) if block(s, r).shape[0] or s == r}
    check(sorted(arrived) == sorted(expect), f"exchange sources {sorted(arrived)} != {sorted(expect)}")
    check(all(torch.equal(arrived[s], expect[s]) for s in expect), "exchange values")
    check(comm.exchange({}, (3,), torch.int64) == {}, "exchange nothing")
    comm.barrier()


def check_migration(ctx: Context, n: int = 37, cycles: int = 4) -> None:
    comm, p, r = ctx.comm, ctx.size, ctx.rank
    g = torch.Generator().manual_seed(1234)
    x_ref = torch.randn(n, 3, 5, generator=g)  # the single-process answer, updated each cycle
    tag_ref = torch.arange(n, dtype=torch.int64) * 10
    # an uneven, scrambled start: rank r holds a random share of a random permutation
    perm = torch.randperm(n, generator=g)
    cuts = sorted(torch.randint(0, n + 1, (p - 1,), generator=g).tolist())
    bounds = [0, *cuts, n]
    ids = perm[bounds[r]:bounds[r + 1]]
    x, tag = x_ref[ids].clone(), tag_ref[ids].clone()
    flag = ids % 3 == 0
    flag_ref = torch.arange(n) % 3 == 0
    for cycle in range(cycles):
        logw = torch.randn(n, generator=g, dtype=torch.float64) * (3.0 if cycle != 2 else 50.0)
        w = torch.softmax(logw, 0)
        anc = systematic(torch.as_tensor(w, dtype=torch.float64), float(torch.rand((), generator=g, dtype=torch.float64))).numpy()
        owner_before = np.full(n, -1)
        for s, gi in enumerate(comm.all_gather(ids)):
            owner_before[gi.numpy()] = s
        res = migrate(comm, ids, x, torch.as_tensor(anc), tag, flag)
        x_ref, tag_ref, flag_ref = x_ref[anc], tag_ref[anc], flag_ref[anc]
        ids, x, (tag, flag) = res.ids, res.x, res.extras
        check(res.plan.moved == lower_bound(owner_before[anc], shard_sizes(n, p)), "moved == lower bound")
        check(ids.shape[0] == shard_sizes(n, p)[r], f"rank {r} holds {ids.shape[0]} particles")
        check(torch.equal(res.ancestors, torch.as_tensor(anc)[ids]), "ancestors")
        check(torch.equal(x, x_ref[ids]) and torch.equal(tag, tag_ref[ids]) and torch.equal(flag, flag_ref[ids]),
              f"cycle {cycle}: local states")
        check(torch.equal(gather_by_id(comm, ids, x, n), x_ref), f"cycle {cycle}: gathered states")
    if r == 0:
        print(f"migration moved {res.plan.moved} of {n} in the last cycle", flush=True)


def main(ctx: Context) -> int:
    check_collectives(ctx)
    check_migration(ctx)
    print(f"rank {ctx.rank} OK ({ctx.info.launcher}, backend={ctx.backend})", flush=True)
    ctx.comm.barrier()
    if ctx.rank == 0:
        print(f"ALL OK size={ctx.size}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_ranked(main, device="cpu", timeout_s=60))
