"""``diffda bench filters``: the optimal-proposal PF, the bootstrap PF and the ETKF on a twin.

Each case is exactly a ``diffda run`` with the overrides listed in the table, so any row can be
rerun on its own.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import load_config
from ..run import assimilate
from ..evaluate.report import markdown_table

CASES: dict[str, list[str]] = {
    "pf-optimal": ["filter.method=pf-optimal", "guidance=mmps", "filter.weights=inflated"],
    "pf-bootstrap": ["filter.method=pf-bootstrap", "filter.regularization=1.0"],
    "etkf": ["filter.method=etkf", "filter.inflation=1.02"],
}


def run_filters(data_dir: Path, out_root: Path, preset: str, particles: list[int], common: list[str],
                log: Callable[[str], None] = lambda s: None) -> tuple[str, list[dict]]:
    """Run every case at every N; return the markdown body and the metrics."""
    from ..commands.run import ensure_data

    rows, results = [], []
    base = [f"data.preset={preset}", *common]
    ensure_data(load_config(overrides=base), data_dir)
    for n in particles:
        for name, extra in CASES.items():
            overrides = [*base, f"filter.particles={n}", *extra]
            cfg = load_config(overrides=overrides)
            out = out_root / f"{name}-n{n}"
            start = time.perf_counter()
            m = assimilate(cfg, data_dir, out, fresh=True).metrics
            log(f"{name} N={n}: rmse_a={m['rmse_analysis']:.3f} in {time.perf_counter() - start:.0f} s")
            results.append({"name": name, "n": n, "overrides": overrides, **m})
            rows.append([name, str(n), f"{m['rmse_analysis']:.3f}", f"{m['rmse_forecast']:.3f}",
                         f"{m['spread_analysis']:.3f}", f"{m['crps_analysis']:.3f}", f"{m['ess_mean']:.1f}",
                         f"{m['ess_min']:.1f}", str(m['resample_count']), f"{m['wall_seconds']:.0f}",
                         f"{m['denoiser_seconds'] / max(m['wall_seconds'], 1e-9):.2f}"])
    if preset == "linear":
        rows.append(["Kalman (exact)", "-", *_kalman_row(data_dir, load_config(overrides=base)), "-", "-", "-", "-", "-"])
    table = markdown_table(
        ["filter", "N", "RMSE a", "RMSE f", "spread a", "CRPS a", "ESS mean", "ESS min", "resamples",
         "wall s", "denoiser/wall"], rows)
    cmds = "\n".join(f"    diffda run --data {data_dir} --out RUN " + " ".join(f"--set {o}" for o in r["overrides"])
                     for r in results if r["n"] == particles[0])
    body = (f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, CPU; "
            f"metrics exclude the first {load_config(overrides=base).filter.spinup} cycles.\n\n"
            f"{table}\n\nThe runs behind each row (N={particles[0]} shown; others differ only in filter.particles):\n\n{cmds}\n")
    return body, results


def _kalman_row(data_dir: Path, cfg) -> list[str]:
    """RMSE f/a... columns for the exact Kalman filter (linear twin only): RMSE a, RMSE f, spread a, CRPS a."""
    import numpy as np
    import xarray as xr

    from ..filters.kalman import kalman_twin_scores
    from ..models.dynamics import Linear

    truth = xr.open_zarr(data_dir / "truth.zarr")
    y = torch.from_numpy(xr.open_zarr(data_dir / "observations.zarr").x.values)
    a = truth.attrs
    x = torch.from_numpy(truth.x.values)
    rmse, spread = kalman_twin_scores(x, y, Linear(a["a"], a["c"]).matrix(int(a["dim"])), a["q"], a["r"],
                                      int(a["stride"]), cfg.filter.init_std)
    sl = slice(cfg.filter.spinup, None)
    return [f"{np.mean(rmse[sl]):.3f}", "-", f"{np.mean(spread[sl]):.3f}", "-"]
