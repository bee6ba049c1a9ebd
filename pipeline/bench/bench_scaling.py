"""``diffda bench scaling``: the same run under ``mpiexec -n P`` for several P.

Reports per P: wall time per cycle (mean over cycles after the first), the fraction of cycle time
rank 0 spends in collectives (``comm_seconds``, which includes waiting for slower ranks) and in
resampling + migration (``resample_seconds``), particles moved between ranks versus the lower
bound ``sum_r max(0, needed_r - kept_r)``, and the largest difference of the analysis from P = 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from ..evaluate.report import markdown_table


def mpiexec() -> str:
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec not found: install the 'mpich' wheel (pip install mpich)")
    return found


def run_scaling(data_dir: Path, out_root: Path, ranks: list[int], overrides: list[str]) -> tuple[str, list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results, ref = [], None
    for p in ranks:
        out = out_root / f"p{p}"
        cmd = [mpiexec(), "-n", str(p), sys.executable, "-m", "pipeline.cli", "run", "--data", str(data_dir),
               "--out", str(out), "--fresh", "--quiet", *[a for o in overrides for a in ("--set", o)]]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"P={p} failed:\n{proc.stderr[-2000:]}")
        ds = xr.open_zarr(out / "analysis.zarr").load()
        cyc = ds.cycle_seconds.values[1:]
        name = next(v for v in ds.data_vars if v + "_spread" in ds.data_vars)
        ref = ds[name].values if ref is None else ref
        results.append({
            "P": p, "cycle_s": float(cyc.mean()),
            "comm": float(ds.comm_seconds.values[1:].sum() / cyc.sum()),
            "resample": float(ds.resample_seconds.values[1:].sum() / cyc.sum()),
            "denoiser": float(ds.denoiser_seconds.values[1:].sum() / cyc.sum()),
            "moved": int(ds.moved.values.sum()), "bound": int(ds.moved_lower_bound.values.sum()),
            "resamples": int(ds.resampled.values.sum()),
            "diff": float(np.abs(ds[name].values - ref).max()),
        })
    rows = [[str(r["P"]), f"{r['cycle_s'] * 1e3:.1f}", f"{r['comm']:.1%}", f"{r['resample']:.1%}",
             f"{r['denoiser']:.1%}", f"{r['moved']} / {r['bound']}", str(r["resamples"]), f"{r['diff']:.1e}"]
            for r in results]
    table = markdown_table(["P", "ms / cycle", "comm", "resample+migrate", "denoiser", "moved / lower bound",
                            "resamples", "max abs diff vs P=1"], rows)
    return table, results
