r"""Per-variable scores of a gridded run: T850, Z500, U250 against the truth and 6-hour persistence.

``panel_scores(run_dir, data_dir, skip)`` reads ``run_dir/analysis.zarr`` (the physical mean under
each variable's name, ``[time, level, lat, lon]``) and ``data_dir/truth.zarr``, and returns, over the
cycles after the first ``skip`` (the spin-up), the RMSE ``sqrt(mean (a - x)^2)`` of each panel in
physical units, the same for persistence ``x(t - 6 h)`` (the previous true state: the estimate a
filter must beat to be worth its observations), and the run's own normalised all-channel scores
(``rmse_analysis``, ``rmse_free``, ``spread_analysis``, ``ess``, ``alpha``, ``cycle_seconds``), and
for each observed variable the analysis RMSE at the observed points (``<name>_at_observed``, all
observed levels, physical units) beside the observation noise (``<name>_noise_std``); with 20 or
more scored cycles, ``trend``: the mean RMSE of the last 10 scored cycles over that of the first 10.

``error_budget(run_dir, data_dir, std, skip)`` splits the run's normalised all-channel mean squared
error ``MSE = mean_c mean_t,lat,lon ((a - x) / s_c)^2`` (the mean over cycles of the square of a
cycle's ``rmse_analysis``, unweighted over the grid; ``s_c`` the emulator's per-channel std) by
variable: each variable's share of it, and the share of its zonal-mean error
``mean_c mean_t,lat (mean_lon (a - x) / s_c)^2``, the part a drift of the jets or of the mass field
would show up in.

Command line (prints one JSON object; ``--budget`` adds ``budget`` with the std of the run's
checkpoint, the shipped one when the run named none)::

    python -m pipeline.evaluate.panels RUN_DIR DATA_DIR [--skip 10] [--budget]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .maps import PANELS

SIX_HOURS = np.timedelta64(6, "h")


def panel_scores(run_dir: str | Path, data_dir: str | Path, skip: int = 10) -> dict:
    """Scores of the cycles ``skip + 1 ..`` (1-based) of a finished gridded run; see the module doc."""
    import xarray as xr

    ana = xr.open_zarr(Path(run_dir) / "analysis.zarr", consolidated=False)
    truth = xr.open_zarr(Path(data_dir) / "truth.zarr", consolidated=False)
    times = ana.time.values[skip:]
    out: dict = {"cycles": int(len(times)), "skip": int(skip)}
    for name, level, label, _unit in PANELS:
        if name not in ana or name not in truth:
            continue
        a = ana[name].sel(level=level, time=times).values
        x = truth[name].sel(level=level, time=times).values
        prev = truth[name].sel(level=level, time=times - SIX_HOURS).values
        out[label] = float(np.sqrt(np.mean((a - x) ** 2)))
        out[f"{label}_persistence"] = float(np.sqrt(np.mean((prev - x) ** 2)))
    obs_path = Path(data_dir) / "observations.zarr"
    if obs_path.exists():  # each observed variable at the observed points (all observed levels), against its noise
        obs = xr.open_zarr(obs_path, consolidated=False)
        for name in obs.data_vars:
            if name not in ana or name not in truth:
                continue
            y = obs[name].sel(time=times)
            levels = y.level.values
            seen = np.isfinite(y.values)
            a = ana[name].sel(level=levels, time=times).values
            x = truth[name].sel(level=levels, time=times).values
            out[f"{name}_at_observed"] = float(np.sqrt(np.mean((a - x)[seen] ** 2)))
            out[f"{name}_noise_std"] = float(obs[name].attrs.get("noise_std", np.nan))
    for key in ("rmse_analysis", "rmse_free", "spread_analysis", "ess", "alpha", "cycle_seconds"):
        if key in ana:
            v = ana[key].values[skip:].astype(float)
            out[key] = float(np.nanmean(v)) if np.isfinite(v).any() else None
    if "rmse_analysis" in ana:  # issue 14's trend: the last 10 scored cycles against the first 10
        v = ana["rmse_analysis"].values[skip:].astype(float)
        if len(v) >= 20 and np.isfinite(v).all():
            out["rmse_first10"], out["rmse_last10"] = float(v[:10].mean()), float(v[-10:].mean())
            out["trend"] = out["rmse_last10"] / out["rmse_first10"]
    return out


def error_budget(run_dir: str | Path, data_dir: str | Path, std: dict[tuple[str, float], float],
                 skip: int = 10) -> dict:
    """Per variable, ``{"share": MSE_v / MSE, "zonal_share": MSE_v^zonal / MSE}`` over the cycles
    ``skip + 1 ..``, for the channels ``(name, level)`` of ``std`` (module doc); ``"rmse"``: ``MSE^(1/2)``."""
    import xarray as xr

    ana = xr.open_zarr(Path(run_dir) / "analysis.zarr", consolidated=False)
    truth = xr.open_zarr(Path(data_dir) / "truth.zarr", consolidated=False)
    times = ana.time.values[skip:]
    if not len(times):
        raise ValueError(f"error_budget: no cycle after skip={skip}")
    total: dict[str, float] = {}
    zonal: dict[str, float] = {}
    for (name, level), s in std.items():
        e = (ana[name].sel(level=level, time=times).values - truth[name].sel(level=level, time=times).values) / s
        total[name] = total.get(name, 0.0) + float(np.mean(e**2)) / len(std)
        zonal[name] = zonal.get(name, 0.0) + float(np.mean(e.mean(-1) ** 2)) / len(std)
    mse = sum(total.values())
    out: dict = {"rmse": float(np.sqrt(mse))}
    for name in total:
        out[name] = {"share": total[name] / mse, "zonal_share": zonal[name] / mse}
    return out


def checkpoint_std(run_dir: str | Path) -> dict[tuple[str, float], float]:
    """``{(name, level): std}`` of the emulator a run used (its config in the store's attributes;
    the shipped checkpoint when it named none)."""
    import xarray as xr

    from ..models.network_checkpoint import read_meta
    from ..models.weights import default_checkpoint

    cfg = json.loads(xr.open_zarr(Path(run_dir) / "analysis.zarr", consolidated=False).attrs["config"])
    if cfg["model"]["kind"] != "neural":
        raise ValueError(f"{run_dir}: model={cfg['model']['kind']}; the budget is in a neural emulator's "
                         "normalisation: leave out --budget for this run")
    meta = read_meta(cfg["model"].get("checkpoint") or default_checkpoint())
    norm = meta["normalisation"]
    return {(str(n), float(lev)): float(s) for (n, lev), s in zip(meta["channels"], norm["std"])}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline.evaluate.panels", description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("data_dir")
    p.add_argument("--skip", type=int, default=10, help="spin-up cycles left out of the scores")
    p.add_argument("--budget", action="store_true",
                   help="add each variable's share of the normalised MSE and its zonal-mean part")
    args = p.parse_args(argv)
    out = panel_scores(args.run_dir, args.data_dir, args.skip)
    if args.budget:
        try:
            out["budget"] = error_budget(args.run_dir, args.data_dir, checkpoint_std(args.run_dir), args.skip)
        except ValueError as e:
            print(f"panels: {e}", file=sys.stderr)
            return 2
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
