r"""Check the communicator on whatever backend this machine has, and time it.

    python -m pipeline.distributed.selftest                         # one process
    python -m pipeline.distributed.selftest --single-group          # one-rank group (NCCL on 1 GPU)
    mpiexec -n 2 python -m pipeline.distributed.selftest            # or srun -n 2 ..., torchrun ...
    mpiexec -n 2 python -m pipeline.distributed.selftest --device cuda --backend gloo

Correctness: ``all_gather`` (uneven, bool, 0-d), ``all_reduce`` (float64), ``exchange`` (uneven,
self-sends, nothing to send), and ``migrate`` against the single-process answer, all on the rank's
device. Timings (median of ``--repeat``, milliseconds, rank 0 prints): all-gather of ``N`` float64
log-weights, all-reduce of one state vector, one migration of ``N`` particles of ``--state``
float32 numbers under skewed weights. Exit 0 when every check passes. NCCL cannot put two ranks
on one GPU: on a one-GPU machine use ``--single-group`` for NCCL and ``--backend gloo`` for two
ranks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from .comm import shard_sizes, shard_start
from .failure import run_ranked
from .launch import Context
from ..filters.resampling import systematic
from .migration import gather_by_id, migrate


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"selftest: {what}")


def check(ctx: Context) -> None:
    """Raise ``AssertionError`` unless every collective gives the single-process answer."""
    comm, p, r, dev = ctx.comm, ctx.size, ctx.rank, ctx.device
    got = comm.all_gather(torch.full((r + 1, 3), float(r), dtype=torch.float64, device=dev))
    _check([g.shape[0] for g in got] == list(range(1, p + 1)), "all_gather counts")
    _check(all(bool(torch.all(g == s)) and g.device == dev for s, g in enumerate(got)), "all_gather values")
    got = comm.all_gather(torch.tensor([r % 2 == 0], device=dev))
    _check([bool(g[0]) for g in got] == [s % 2 == 0 for s in range(p)], "all_gather bool")
    got = comm.all_gather(torch.tensor(r + 0.25, dtype=torch.float64, device=dev))
    _check([float(g) for g in got] == [s + 0.25 for s in range(p)], "all_gather 0-d")
    base = torch.linspace(-1, 1, 11, dtype=torch.float64, device=dev) / 7
    red = comm.all_reduce(base * (r + 1))
    _check(red.dtype == torch.float64 and torch.allclose(red, base * (p * (p + 1) / 2), rtol=1e-15, atol=0),
           "all_reduce float64")

    def block(s: int, d: int) -> torch.Tensor:
        k = (s + 2 * d) % 3
        return torch.arange(k * 6, dtype=torch.float32, device=dev).reshape(k, 2, 3) + 100 * s + d

    sends = {d: block(r, d) for d in range(p) if block(r, d).shape[0] or d == r}
    arrived = comm.exchange(sends, (2, 3), torch.float32)
    expect = {s: block(s, r) for s in range(p) if block(s, r).shape[0] or s == r}
    _check(sorted(arrived) == sorted(expect), "exchange sources")
    _check(all(torch.equal(arrived[s].to(dev), expect[s]) for s in expect), "exchange values")
    _check(comm.exchange({}, (1,), torch.int64) == {}, "exchange nothing")

    n = 4 * p + 3
    g = torch.Generator().manual_seed(7)
    x_ref = torch.randn(n, 5, generator=g).to(dev)
    ids = torch.arange(n)[shard_start(n, p, r):shard_start(n, p, r) + shard_sizes(n, p)[r]]
    x = x_ref[ids.to(dev)]
    for _ in range(3):
        w = torch.softmax(4 * torch.randn(n, generator=g, dtype=torch.float64), 0)
        anc = systematic(torch.as_tensor(w, dtype=torch.float64), float(torch.rand((), generator=g)))
        res = migrate(comm, ids, x, torch.as_tensor(anc), ids.to(dev) * 2)
        x_ref = x_ref[torch.as_tensor(anc, device=dev)]
        ids, x = res.ids, res.x
        _check(torch.equal(res.extras[0], torch.as_tensor(anc, device=dev)[ids.to(dev)] * 2), "migrate extras")
        _check(torch.equal(gather_by_id(comm, ids, x, n), x_ref), "migrate states")
    comm.barrier()


def _time(fn: Callable[[], object], dev: torch.device, repeat: int) -> float:
    fn()
    _sync(dev)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def bench(ctx: Context, n: int, state: int, repeat: int) -> dict[str, float]:
    """Median milliseconds of the filter's per-cycle communication for ``n`` particles."""
    comm, p, r, dev = ctx.comm, ctx.size, ctx.rank, ctx.device
    n_r = shard_sizes(n, p)[r]
    ids = torch.arange(shard_start(n, p, r), shard_start(n, p, r) + n_r)
    logw = torch.randn(n_r, dtype=torch.float64, device=dev)
    x = torch.randn(n_r, state, dtype=torch.float32, device=dev)
    vec = torch.randn(state, dtype=torch.float64, device=dev)
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.full(n, 0.3))  # skewed: many particles die, a few multiply
    anc = torch.as_tensor(systematic(torch.as_tensor(w, dtype=torch.float64), 0.5))
    out = {
        "all_gather_logw_ms": _time(lambda: comm.all_gather(logw), dev, repeat),
        "all_reduce_state_ms": _time(lambda: comm.all_reduce(vec), dev, repeat),
        "migrate_ms": _time(lambda: migrate(comm, ids, x, anc), dev, repeat),
    }
    out["moved"] = float(migrate(comm, ids, x, anc).plan.moved)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.distributed.selftest", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    ap.add_argument("--single-group", action="store_true", help="open a process group even for one rank")
    ap.add_argument("--particles", type=int, default=256)
    ap.add_argument("--state", type=int, default=65536, help="numbers per particle state (float32)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)

    def body(ctx: Context) -> int:
        check(ctx)
        if args.single_group and ctx.size == 1:  # rows to oneself through the backend as well
            ctx.comm.self_via_wire = True  # type: ignore[attr-defined]
            check(ctx)
        times = bench(ctx, args.particles, args.state, args.repeat)
        if ctx.rank == 0:
            mb = args.particles * args.state * 4 / 2**20
            print(f"selftest OK: {ctx.size} rank(s), launcher={ctx.info.launcher}, backend={ctx.backend or 'local'}, "
                  f"device={ctx.device}, {args.particles} particles x {args.state} float32 ({mb:.1f} MiB)")
            for k, v in times.items():
                print(f"  {k:22s} {v:10.3f}")
        return 0

    return run_ranked(body, device=args.device, backend=args.backend, timeout_s=args.timeout,
                      single_group=args.single_group)


if __name__ == "__main__":
    sys.exit(main())
