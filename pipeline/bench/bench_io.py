r"""``diffda bench io``: how long the filter waits on input, and how fast analyses are written.

1. **Input wait.** A gridded run on the sphere data (``model=gaussian``: the per-channel AR(1)
   denoiser, so the cycle is cheap and the fraction is a pessimistic bound: a neural denoiser's
   cycle is far longer for the same reads). Per cycle, the seconds ``problem.observation(k)``
   waited for its inputs (observations + reference, :class:`~pipeline.data.stream.Prefetcher`)
   over the cycle's wall time, with the background prefetch (``data.prefetch=1``, the default)
   and without it (``data.prefetch=0``: every read in the foreground). The first cycle cannot be
   prefetched; the steady state leaves it out.
2. **Analysis writes.** :class:`~pipeline.data.analysis.AnalysisStore` on the same grid: the
   template, then one region write per cycle of mean, spread and ``members`` members; MB/s of
   uncompressed float32 field data.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..evaluate.report import markdown_table


def _wait_fraction(data: Path, out: Path, overrides: list[str], prefetch: int, log: Callable[[str], None]) -> dict:
    from ..config import load_config
    from ..data import gridded
    from ..run import assimilate

    cfg = load_config(overrides=[*overrides, f"data.prefetch={prefetch}"])
    rows: list[tuple[float, float, float]] = []

    def progress(k: int, n: int, diag: dict) -> None:
        p = max(gridded.INSTANCES, key=lambda p: p.serial)  # this run's problem
        rows.append((p.stream_stats.wait[-1], p.stream_stats.read[-1], float(diag["cycle_seconds"])))

    shutil.rmtree(out, ignore_errors=True)
    tic = time.perf_counter()
    assimilate(cfg, data, out, progress=progress, fresh=True)
    wall = time.perf_counter() - tic
    wait, read, cycle = (np.array(c) for c in zip(*rows))
    steady = slice(1, None) if len(rows) > 1 else slice(None)
    res = {"prefetch": prefetch, "cycles": len(rows), "wall": wall,
           "cycle_mean": float(cycle.mean()), "read_mean": float(read.mean()),
           "wait_all": float(wait.sum() / cycle.sum()),
           "wait_steady": float(wait[steady].sum() / cycle[steady].sum()),
           "wait_max": float((wait[steady] / cycle[steady]).max())}
    log(f"prefetch={prefetch}: {res}")
    return res


def _write_throughput(data: Path, out: Path, members: int, cycles: int, log: Callable[[str], None]) -> dict:
    import torch

    from ..config import load_config
    from ..data.analysis import AnalysisStore
    from ..data.gridded import load_gridded

    cfg = load_config(overrides=["data.preset=sphere", "model=gaussian"])
    problem = load_gridded(cfg, data, torch.device("cpu"), torch.float32)
    n = min(cycles, problem.n_cycles)
    times = problem.times[:n]
    shutil.rmtree(out, ignore_errors=True)
    tic = time.perf_counter()
    store = AnalysisStore.create(out, problem.template(members), times, {}, ["ess"])
    t_template = time.perf_counter() - tic
    g = torch.Generator().manual_seed(0)
    shape = problem.state_shape
    dims = {**problem.dims(True), "ess": ()}
    seconds, nbytes = [], 0
    for k in range(n):
        mean = torch.randn(shape, generator=g, dtype=torch.float64)
        spread = torch.rand(shape, generator=g, dtype=torch.float64)
        mem = torch.randn((members, *shape), generator=g, dtype=torch.float64)
        fields = problem.fields(mean, spread, mem)
        fields["ess"] = np.array(float(members))
        tic = time.perf_counter()
        store.write_cycle(k, fields, dims)
        seconds.append(time.perf_counter() - tic)
        nbytes += sum(np.asarray(v).nbytes for v in fields.values())
    tic = time.perf_counter()
    store.finalise()
    t_final = time.perf_counter() - tic
    problem.close()
    files = sum(1 for p in Path(out).rglob("*") if p.is_file())
    disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    s = np.array(seconds)
    res = {"cycles": n, "members": members, "mb_per_cycle": nbytes / n / 1e6, "write_mean": float(s.mean()),
           "write_max": float(s.max()), "mb_s": nbytes / s.sum() / 1e6, "template": t_template,
           "finalise": t_final, "files": files, "disk_mb": disk / 1e6}
    log(f"writes: {res}")
    return res


def run_io(data: Path, out: Path, overrides: list[str], members: int = 32, write_cycles: int = 40,
           log: Callable[[str], None] = print) -> tuple[str, dict]:
    """Both measurements; returns the markdown body and the raw numbers."""
    out = Path(out)
    base = ["data.preset=sphere", "model=gaussian", *overrides]
    off = _wait_fraction(data, out / "sync", base, 0, log)
    on = _wait_fraction(data, out / "prefetch", base, 1, log)
    w = _write_throughput(data, out / "writes.zarr", members, write_cycles, log)
    pct = lambda x: f"{100 * x:.2f} %"  # noqa: E731
    wait_table = markdown_table(
        ["inputs", "cycles", "cycle (s)", "read (s)", "wait / cycle, all", "wait / cycle, steady", "worst steady cycle"],
        [[("prefetched (data.prefetch=1)" if r["prefetch"] else "read in the foreground (data.prefetch=0)"),
          str(r["cycles"]), f"{r['cycle_mean']:.3f}", f"{r['read_mean']:.4f}", pct(r["wait_all"]),
          pct(r["wait_steady"]), pct(r["wait_max"])] for r in (on, off)])
    write_table = markdown_table(
        ["members", "cycles", "MB per cycle", "write (s), mean / max", "throughput", "template (s)",
         "finalise (s)", "files", "on disk"],
        [[str(w["members"]), str(w["cycles"]), f"{w['mb_per_cycle']:.2f}",
          f"{w['write_mean']:.3f} / {w['write_max']:.3f}", f"{w['mb_s']:.1f} MB/s", f"{w['template']:.2f}",
          f"{w['finalise']:.2f}", str(w["files"]), f"{w['disk_mb']:.1f} MB"]])
    goal = "met" if on["wait_steady"] <= 0.02 else "NOT met"
    load = ", ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    body = (
        f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, CPU only (load average at the end: "
        f"{load}; other work on the machine inflates cycle and read times alike); data: `{data}` "
        f"(the sphere preset, ERA5 layout, 64x32); filter config: {', '.join(base)}.\n\n"
        "Input wait = seconds `problem.observation(k)` spent waiting for cycle k's observations and "
        "reference, over the cycle's wall time. The AR(1) stand-in denoiser makes the cycle short, so "
        "this is an upper bound of what a neural run waits.\n\n"
        f"{wait_table}\n\nGoal ≤ 2 % of the cycle in steady state: **{goal}** with prefetching.\n\n"
        "Analysis writes: one region write per cycle (mean, spread, members of every variable, "
        "float32; uncompressed bytes over write time), Zarr 3, one chunk per cycle and variable.\n\n"
        f"{write_table}\n")
    return body, {"prefetch": on, "sync": off, "writes": w}
