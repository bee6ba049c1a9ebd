r"""``diffda bench gpu``: the prepared GPU check, one command, under 5 minutes on one H200.

Four parts, each measured on the device it names (:func:`.bench_denoiser.device_description`):

1. *the N = 256 cycle*: :func:`.bench_denoiser.run_cycle_bench` on the sphere data with the
   shipped emulator and the embedded default's filter (MMPS, diagonal covariance, 16 sampler
   steps), fp32 against bf16 autocast; the *denoiser share* is the time inside the network
   (forward + VJPs, CUDA-synchronised hooks) over the cycle's wall time (goal >= 95 %);
2. *fp32 vs bf16, torch.compile and CUDA graphs on and off*: :func:`.bench_denoiser.run_denoiser_bench`
   at micro-batch 256 for each of the four combinations, in particle-steps per second;
3. *NCCL*: ``P = torch.cuda.device_count()`` ranks spawned on this machine, a torch.distributed
   group over TCP on 127.0.0.1, the wall time of ``all_reduce`` (sum) of 8 float64 values (the
   log-weight statistics: latency) and of 64 MiB float32 (bandwidth; bus bandwidth
   ``2 (P - 1) / P * bytes / time``), median of ``repeats`` after a warm-up;
4. the section ``gpu`` of ``docs/benchmarks.md``, with the device named and the command shown.

Without CUDA it refuses (:class:`~pipeline.errors.DiffdaError`). ``--device cpu --quick`` is a
smoke run of the same code paths on the CPU at toy sizes (4 particles, 2 sampler steps, gloo
with 2 ranks, compile off: inductor's C++ build would take minutes): its numbers are not a
benchmark, and the report says so.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import DiffdaError
from ..evaluate.report import markdown_table

FULL = dict(particles=256, steps=16, cycles=3, batch=256, repeats=5, guided_batch=64,
            sizes=(8 * 8, 64 * 2**20), collective_repeats=20)
QUICK = dict(particles=4, steps=2, cycles=2, batch=4, repeats=1, guided_batch=0,
             sizes=(8 * 8, 2**16), collective_repeats=3)
CYCLE_OVERRIDES = ("guidance.covariance=diagonal", "filter.weights=inflated", "filter.init_std=0.05")


def check_device(device: str, quick: bool) -> torch.device:
    """The device to measure on; refuse without CUDA unless ``device == 'cpu'`` and ``quick``."""
    if device == "cpu":
        if not quick:
            raise DiffdaError("diffda bench gpu --device cpu is only a smoke run: add --quick "
                              "(its numbers are not a GPU benchmark)")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DiffdaError("diffda bench gpu needs a CUDA GPU and none is visible here "
                          "(torch.cuda.is_available() is False: a CPU-only torch or no device). Run it on a GPU "
                          "node with the CUDA environment (env/), or `diffda bench gpu --device cpu --quick` "
                          "for a smoke run of the code paths")
    return torch.device(device if device.startswith("cuda") else "cuda")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _collective_worker(rank: int, world: int, backend: str, port: int, sizes: tuple[int, ...], repeats: int,
                       out: str) -> None:
    import torch.distributed as dist

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dev = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        rows = []
        for nbytes in sizes:
            dtype = torch.float64 if nbytes <= 1024 else torch.float32
            x = torch.full((nbytes // torch.tensor([], dtype=dtype).element_size(),), float(rank + 1),
                           dtype=dtype, device=dev)
            times = []
            for i in range(repeats + 1):
                y = x.clone()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                dist.barrier()
                tic = time.perf_counter()
                dist.all_reduce(y)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i:
                    times.append(time.perf_counter() - tic)
            expect = world * (world + 1) / 2  # sum over ranks of (rank + 1)
            ok = bool(torch.all(y == expect))
            rows.append({"bytes": nbytes, "dtype": str(dtype).replace("torch.", ""), "seconds": statistics.median(times),
                         "correct": ok})
        if rank == 0:
            torch.save(rows, out)
    finally:
        dist.destroy_process_group()


def run_collectives(backend: str, world: int, sizes: tuple[int, ...], repeats: int) -> list[dict]:
    """Median all-reduce times over ``world`` spawned ranks on 127.0.0.1 (rank 0's view)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rows.pt")
        mp.spawn(_collective_worker, args=(world, backend, _free_port(), tuple(sizes), repeats, out),
                 nprocs=world, join=True)
        rows = torch.load(out)
    for r in rows:
        r["bus_GBps"] = 2 * (world - 1) / world * r["bytes"] / r["seconds"] / 1e9 if world > 1 else float("nan")
    return rows


def run_gpu_bench(data: Path, out: Path, checkpoint: Path, device: str = "cuda", quick: bool = False,
                  log: Callable[[str], None] = lambda s: None) -> tuple[str, dict]:
    """Markdown body and numbers of the GPU check (``data``: sphere stores, made by the caller)."""
    from .bench_denoiser import device_description, run_cycle_bench, run_denoiser_bench

    dev = check_device(device, quick)
    p = QUICK if quick else FULL
    wall = time.perf_counter()
    results: dict = {"device": device_description(dev), "quick": quick}

    # 1. the N = 256 cycle, fp32 vs bf16
    tic = time.perf_counter()
    cycle_body, cycle_rows = run_cycle_bench(
        data, out / "cycle", checkpoint, p["particles"], p["steps"], p["cycles"], ["fp32", "bf16"],
        [*CYCLE_OVERRIDES, f"run.device={dev.type}"], log=log)
    results["cycle"] = cycle_rows
    log(f"cycle in {time.perf_counter() - tic:.0f} s")

    # 2. compile x CUDA graphs, fp32 and bf16
    combos = [(False, False), (False, True)] if quick else [(False, False), (True, False), (False, True), (True, True)]
    matrix = []
    for compile_, graphs in combos:
        tic = time.perf_counter()
        _, rows = run_denoiser_bench(checkpoint, [p["batch"]], ["fp32", "bf16"], device=str(dev), compile=compile_,
                                     cuda_graphs=graphs, repeats=p["repeats"], guided_batch=p["guided_batch"], log=log)
        for r in rows:
            matrix.append({**r, "compile": compile_, "cuda_graphs": graphs})
        log(f"compile={compile_} cuda_graphs={graphs} in {time.perf_counter() - tic:.0f} s")
    results["denoiser"] = matrix

    # 3. collectives over the ranks the machine has
    if dev.type == "cuda":
        backend, world = "nccl", torch.cuda.device_count()
    else:
        backend, world = "gloo", 2
    tic = time.perf_counter()
    coll = run_collectives(backend, world, p["sizes"], p["collective_repeats"])
    results["collectives"] = {"backend": backend, "ranks": world, "rows": coll}
    log(f"{backend} x {world} in {time.perf_counter() - tic:.0f} s")
    results["wall_seconds"] = time.perf_counter() - wall

    table = markdown_table(
        ["dtype", "torch.compile", "CUDA graphs", "call", "micro-batch", "ms / call", "particle-steps / s"],
        [[r["dtype"], "on" if r["compile"] else "off", "on" if r["cuda_graphs"] else "off", r["kind"], str(r["batch"]),
          f"{r['seconds'] * 1e3:.2f}", f"{r['rate']:.0f}"] for r in matrix])
    coll_table = markdown_table(
        ["message", "dtype", "median s", "bus GB/s", "sum correct"],
        [[f"{r['bytes'] / 2**20:.3g} MiB" if r["bytes"] >= 2**20 else f"{r['bytes']} B", r["dtype"],
          f"{r['seconds']:.3g}", f"{r['bus_GBps']:.1f}", str(r["correct"])] for r in coll])
    share = ", ".join(f"{r['dtype']} {r['fraction']:.1%}" for r in cycle_rows)
    body = (
        ("**Quick smoke run on the CPU (`--quick`): toy sizes, not a benchmark.**\n\n" if quick else "")
        + f"Device: {results['device']}. Total {results['wall_seconds']:.0f} s.\n\n"
        f"### N = {p['particles']} cycle on the sphere\n\nDenoiser share of the wall time: {share} "
        "(goal >= 95 %).\n\n" + cycle_body
        + "\n### Denoiser: fp32 vs bf16, torch.compile and CUDA graphs\n\n"
        + ("(CUDA graphs have no effect on the CPU; torch.compile not run in the smoke run.)\n\n"
           if dev.type != "cuda" else "") + table
        + f"\n\n### {backend.upper()} all-reduce, {world} rank(s) on 127.0.0.1\n\n" + coll_table + "\n")
    return body, results
