r"""``diffda bench sphere``: the gridded skill table (issue 14), every row a ``diffda run`` shown beside it.

On one sphere data directory (the dinosaur truth, a perfect-model twin, another seed, another
network), each row is the embedded default's configuration (``pipeline/presets/default.yaml``) with
``run.cycles``, ``filter.spinup``, ``filter.particles`` and the row's method overrides:

- ``free``: ``filter.method=free``, the same ensemble without observations (the baseline);
- ``pf-local``: the embedded default itself (the localised particle filter, NETF transform);
- ``letkf``: ``filter.method=letkf`` (the preset's radius, RTPS, inflations);
- ``pf-tempered``: ``filter.method=pf-optimal filter.tempering=adaptive`` (the seed's filter with
  the seed authors' tempering).

Rows run as subprocesses (one torch thread each, ``jobs`` at a time); a rerun of the bench resumes
unfinished rows and re-reads finished ones (``diffda run``'s own resume), ``fresh`` redoes them.
Scores over the cycles after the spin-up (:func:`pipeline.evaluate.panels.panel_scores`): the
normalised all-channel RMSE of the analysis mean (the run's ``rmse_analysis``), its ratio to the free
run's at the same N and to 6-hour persistence (``x^{k-1}`` against ``x^k``, the same normalisation),
``trend`` (the last 10 scored cycles' RMSE over the first 10's), spread/RMSE, T850, Z500 and U250 in
physical units, temperature at the observed points, ESS, tempering alpha and seconds per cycle.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DiffdaError
from ..evaluate.report import markdown_table

#: row label -> overrides beyond the shared ones
METHODS: dict[str, list[str]] = {
    "free": ["filter.method=free"],
    "pf-local": [],
    "letkf": ["filter.method=letkf"],
    "pf-tempered": ["filter.method=pf-optimal", "filter.tempering=adaptive"],
}
PARTICLE_FILTERS = ("pf-local", "pf-tempered")


def row_command(label: str, n: int, data: Path, out: Path, cycles: int, spinup: int, extra: list[str],
                fresh: bool) -> list[str]:
    """The ``diffda run`` arguments of one row."""
    sets = [f"run.cycles={cycles}", f"filter.spinup={spinup}", f"filter.particles={n}", "run.free_baseline=false",
            *METHODS[label], *extra]
    from ..commands.run import EMBEDDED_DEFAULT

    preset = EMBEDDED_DEFAULT.relative_to(Path.cwd()) if EMBEDDED_DEFAULT.is_relative_to(Path.cwd()) else EMBEDDED_DEFAULT
    args = ["run", str(preset), "--data", str(data), "--out", str(out)]
    return [*args, *(["--fresh"] if fresh else []), *[a for s in sets for a in ("--set", s)]]


def shown(args: list[str]) -> str:
    return "diffda " + " ".join(shlex.quote(a) for a in args)


def persistence(data: Path, times: np.ndarray, std: dict[tuple[str, float], float]) -> float:
    """Mean over ``times`` of the normalised all-channel RMSE of ``x(t - 6 h)`` against ``x(t)``."""
    import xarray as xr

    truth = xr.open_zarr(Path(data) / "truth.zarr", consolidated=False)
    six = np.timedelta64(6, "h")
    sq = []
    for (name, level), s in std.items():
        x = truth[name].sel(level=level, time=times).values
        p = truth[name].sel(level=level, time=times - six).values
        sq.append((((x - p) / s) ** 2).reshape(len(times), -1).mean(1))
    return float(np.mean(np.sqrt(np.mean(sq, axis=0))))


def channel_std(overrides: list[str]) -> dict[tuple[str, float], float]:
    """The emulator's normalisation std per (variable, level): the run's normalised units."""
    from ..config import load_config
    from ..models.network_checkpoint import read_meta
    from ..commands.run import EMBEDDED_DEFAULT
    from ..models.weights import default_checkpoint

    cfg = load_config(EMBEDDED_DEFAULT, overrides)
    meta = read_meta(cfg.model.checkpoint or default_checkpoint())
    return {(v, float(lv)): float(s) for (v, lv), s in zip(meta["channels"], meta["normalisation"]["std"])}


def run_sphere(data: Path, out_root: Path, methods: list[str], particles: list[int], cycles: int, spinup: int,
               extra: list[str], jobs: int = 1, fresh: bool = False,
               log: Callable[[str], None] = lambda s: None) -> tuple[str, dict]:
    """Run (or resume) every row and score it; return the markdown body and the scores per row."""
    from ..evaluate.panels import panel_scores

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise DiffdaError(f"bench sphere --methods: unknown {unknown}; choose from {sorted(METHODS)}")
    if not ((data / "truth.zarr").exists() and (data / "observations.zarr").exists()):
        raise DiffdaError(f"bench sphere --data {data}: no truth.zarr and observations.zarr there; make them with "
                          f"`diffda make-data sphere --out {data}`")
    if spinup + 20 > cycles:
        raise DiffdaError(f"bench sphere: --cycles {cycles} must exceed --spinup {spinup} by at least 20 (the trend "
                          "compares the first and last 10 scored cycles)")
    std = channel_std(extra)
    rows = [(label, n) for n in particles for label in (["free"] if "free" not in methods else []) + methods]
    commands = {r: row_command(r[0], r[1], data, out_root / f"{r[0]}-n{r[1]}", cycles, spinup, extra, fresh) for r in rows}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def execute(row):
        log(f"bench sphere: {shown(commands[row])}")
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *commands[row]], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise DiffdaError(f"bench sphere: row {row[0]} N={row[1]} failed (exit {done.returncode}):\n"
                              f"{done.stderr[-2000:]}")
        log(f"bench sphere: {row[0]} N={row[1]} done")

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(execute, rows))

    scores: dict = {}
    for label, n in rows:
        run = out_root / f"{label}-n{n}"
        s = panel_scores(run, data, skip=spinup)
        metrics = json.loads((run / "metrics.json").read_text())
        s["rmse"] = metrics["rmse_analysis"]
        s["seconds"] = metrics["wall_seconds"] / metrics["cycles"]
        scores[(label, n)] = s
    import xarray as xr

    times = xr.open_zarr(out_root / f"{rows[0][0]}-n{rows[0][1]}" / "analysis.zarr", consolidated=False).time.values[spinup:]
    pers = persistence(data, times, std)
    first = scores[rows[0]]
    table = [["persistence (6 h)", "-", f"{pers:.3f}", "-", "1.00", "-", "-",
              f"{first['T850_persistence']:.2f}", f"{first['Z500_persistence']:.0f}", f"{first['U250_persistence']:.2f}",
              "-", "-", "-", "-"]]
    for label, n in rows:
        s = scores[(label, n)]
        free = scores[("free", n)]["rmse"]
        s["ratio_free"], s["ratio_persistence"] = s["rmse"] / free, s["rmse"] / pers
        s["spread_ratio"] = s["spread_analysis"] / s["rmse"]
        t_obs = s.get("temperature_at_observed")
        table.append([label, str(n), f"{s['rmse']:.3f}", f"{s['ratio_free']:.2f}", f"{s['ratio_persistence']:.2f}",
                      f"{s.get('trend', float('nan')):.2f}", f"{s['spread_ratio']:.2f}", f"{s['T850']:.2f}",
                      f"{s['Z500']:.0f}", f"{s['U250']:.2f}", "-" if t_obs is None or label == "free" else f"{t_obs:.2f}",
                      f"{s['ess']:.1f}", f"{s['alpha']:.2f}" if label in PARTICLE_FILTERS and np.isfinite(s.get("alpha", np.nan)) else "-",
                      f"{s['seconds']:.1f}"])
    header = ["filter", "N", "RMSE", "x free", "x persistence", "trend", "spread/RMSE", "T850 K", "Z500 m2/s2",
              "U250 m/s", "T at obs K", "ESS", "alpha", "s/cycle"]
    shared = [f"run.cycles={cycles}", f"filter.spinup={spinup}", "filter.particles=N", "run.free_baseline=false", *extra]
    body = (f"Data `{data}`; {cycles} cycles, scores over cycles {spinup + 1}-{cycles}. Each row is "
            f"`diffda run pipeline/presets/default.yaml --data {data} --out RUN "
            + " ".join(f"--set {shlex.quote(o)}" for o in shared)
            + "` plus the row's own overrides ("
            + "; ".join(f"{k}: `{' '.join(v) or '(none: the embedded default)'}`" for k, v in METHODS.items()
                        if k in {r[0] for r in rows})
            + "). RMSE: normalised, all 12 channels (the emulator's per-channel std); x free: over the free "
            "run's at the same N; x persistence: over the 6-hour persistence's; trend: the last 10 scored "
            "cycles' RMSE over the first 10's; T at obs: the temperature analysis at the observed points "
            f"(the observation noise is {first.get('temperature_noise_std', float('nan')):g} K). Machine: "
            f"{os.cpu_count()} cores shared with other jobs, one torch thread per run.\n\n"
            + markdown_table(header, table) + "\n")
    return body, scores


def verdict(scores: dict, twin: bool) -> str:
    """Each filter row against issue 14's bars (the perfect-model twin's when ``twin``)."""
    lines = []
    for (label, n), s in scores.items():
        if label == "free":
            continue
        if twin:
            ok = s["ratio_free"] <= 0.5 and 0.6 <= s["spread_ratio"] <= 1.5
            lines.append(f"- {label}, N = {n}: {s['ratio_free']:.2f} x the free run (bar 0.5), spread/RMSE "
                         f"{s['spread_ratio']:.2f} (bar 0.6-1.5): {'met' if ok else 'not met'}.")
        else:
            t_obs, noise = s.get("temperature_at_observed", np.inf), s.get("temperature_noise_std", np.nan)
            bars = [s["ratio_free"] <= 0.7, s["ratio_persistence"] < 1.0, s.get("trend", np.inf) <= 1.25, t_obs < noise]
            lines.append(f"- {label}, N = {n}: {s['ratio_free']:.2f} x the free run (bar 0.7), "
                         f"{s['ratio_persistence']:.2f} x persistence (bar < 1), trend {s.get('trend', float('nan')):.2f} "
                         f"(bar 1.25), T at observed points {t_obs:.2f} K (bar < {noise:g} K): "
                         f"{'met' if all(bars) else 'not met'}.")
        if label in PARTICLE_FILTERS and ("letkf", n) in scores:
            lines[-1] += f" Against the LETKF at the same N: {s['rmse'] / scores[('letkf', n)]['rmse']:.2f} x."
    return "\n".join(lines)


def plot(png: Path, out_root: Path, rows: list[tuple[str, int]], title: str) -> None:
    """RMSE and spread by cycle of every row (:func:`pipeline.evaluate.plots.plot_runs`)."""
    import xarray as xr

    from ..evaluate.plots import plot_runs

    runs = {}
    for label, n in rows:
        ds = xr.open_zarr(out_root / f"{label}-n{n}" / "analysis.zarr", consolidated=False)
        runs[f"{label} N={n}"] = {k: ds[k].values for k in ("rmse_analysis", "spread_analysis")}
    plot_runs(png, runs, title)
