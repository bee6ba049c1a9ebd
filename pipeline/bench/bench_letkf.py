"""``diffda bench letkf``: diffda's LETKF beside DAPPER's on Lorenz-96 ``sakov2008``, one run.

Twin: F = 8, 40 variables, obs every 0.05 of every variable, R = I, q = 0 (``make-data lorenz96
--set q=0``). diffda: ``filter.method=letkf`` with ``filter.localization_radius = 1.82 loc_rad``
(the same Gaspari–Cohn taper as DAPPER's ``loc_rad``, :mod:`pipeline.filters.localisation`) and
``sampler.steps=1`` (with q = 0 the exact Gaussian denoiser returns the model step, so one step
is the deterministic forecast). DAPPER: ``LETKF(N, infl, loc_rad)`` (no rotation) from its own
venv (``env/dapper-venv.sh``), on its own truth of the same length, measured in the same run.
Differences that remain: DAPPER inflates the analysis anomalies, diffda the forecast anomalies
(the same factor per cycle, applied half a cycle apart); DAPPER's ``sakov2008`` analyses state
points in batches of 2 with the batch's mean distance.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..config import load_config
from ..filters.localisation import dapper_radius
from ..run import assimilate
from ..evaluate.report import markdown_table

ROOT = Path(__file__).resolve().parents[2]
INFLATION = {7: 1.04, 10: 1.02, 20: 1.02, 40: 1.01}


def dapper(spec: dict) -> dict:
    """Run :mod:`.dapper_l96` in DAPPER's venv (made by env/dapper-venv.sh when absent)."""
    python = ROOT / ".dapper-venv" / "bin" / "python"
    if not python.exists():
        subprocess.run(["bash", str(ROOT / "env" / "dapper-venv.sh")], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), str(Path(__file__).with_name("dapper_l96.py")), json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_letkf(data_dir: Path, out_root: Path, particles: list[int], cycles: int, spinup: int, loc_rad: float,
              log: Callable[[str], None] = lambda s: None) -> tuple[str, list[dict]]:
    from ..data.twins import make_twin

    make_twin("lorenz96", data_dir, {"q": 0.0, "cycles": cycles})
    radius = round(dapper_radius(loc_rad), 6)
    ref = dapper({"cycles": cycles, "burnin": spinup, "q": 0.0,
                  "cases": [{"method": "LETKF", "N": n, "infl": INFLATION.get(n, 1.02), "loc_rad": loc_rad}
                            for n in particles]})
    rows, results = [], []
    for n, d in zip(particles, ref["cases"]):
        overrides = ["data.preset=lorenz96", f"filter.particles={n}", "filter.method=letkf",
                     f"filter.localization_radius={radius}", f"filter.inflation={INFLATION.get(n, 1.02)}",
                     "sampler.steps=1", f"filter.spinup={spinup}", "run.checkpoint_every=100000"]
        start = time.perf_counter()
        m = assimilate(load_config(overrides=overrides), data_dir, out_root / f"letkf-n{n}", fresh=True).metrics
        ours = m["wall_seconds"] / m["cycles"]
        log(f"letkf N={n}: {m['rmse_analysis']:.3f} (DAPPER {d['rmse']:.3f}) in {time.perf_counter() - start:.0f} s")
        results.append({"n": n, "overrides": overrides, "diffda": m, "dapper": d})
        rows.append([str(n), f"{INFLATION.get(n, 1.02)}", f"{m['rmse_analysis']:.3f}", f"{d['rmse']:.3f}",
                     f"{m['rmse_analysis'] / d['rmse']:.2f}", f"{m['spread_analysis']:.3f}", f"{d['spread']:.3f}",
                     f"{1e3 * ours:.1f}", f"{1e3 * d['seconds_per_cycle']:.1f}", f"{ours / d['seconds_per_cycle']:.2f}"])
    table = markdown_table(["N", "infl", "RMSE a diffda", "RMSE a DAPPER", "ratio", "spread diffda", "spread DAPPER",
                            "ms/cycle diffda", "ms/cycle DAPPER", "time ratio"], rows)
    cmds = "\n".join(f"    diffda run --data {data_dir} --out RUN " + " ".join(f"--set {o}" for o in r["overrides"])
                     for r in results[:1])
    body = (f"Lorenz-96 sakov2008 (F = 8, 40 variables, all observed every 0.05, R = I, q = 0), {cycles} cycles, "
            f"the first {spinup} left out; DAPPER {ref['dapper']} `LETKF(N, infl, loc_rad={loc_rad})` (rot off) "
            f"beside `filter.method=letkf` with `filter.localization_radius={radius}` (= 1.82 loc_rad, the same "
            f"Gaspari-Cohn taper). Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
            f"one thread. diffda's ms/cycle is the whole cycle (forecast by the one-step sampler, analysis, "
            f"moments, scores; not the Zarr write); DAPPER's is `assimilate` over the cycles (forecast, analysis, "
            f"its statistics). Each side has its own truth and noise draw.\n\n{table}\n\n"
            f"The diffda run behind the first row (the others differ in filter.particles and filter.inflation):\n\n{cmds}\n")
    return body, results
