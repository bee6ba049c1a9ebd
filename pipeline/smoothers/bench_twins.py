r"""``diffda bench smoother-twins``: the KDE score smoother against filters on Lorenz-63 and Lorenz-96.

For each case, one window of ``L`` observation times (``run.start``, ``run.cycles = L``) of a twin with
model noise ``q``; every row scores the same window (RMSE and spread of the mean over its times):

- ``smoother (KDE)``: ``diffda smooth`` with ``model=kde`` (``model.archive`` windows of ``2k+1``
  states cut from independent runs, bandwidth factor ``model.bandwidth``), MMPS with the windows'
  Jacobian, ``S`` samples; it sees the window's observations only, its prior is the climatology;
- ``bootstrap PF filter`` and ``bootstrap PF smoother (FFBSi)`` (:mod:`.particle`, Lorenz-63 only:
  ``N`` particles drawn from the climatology at the window start, ``M`` backward trajectories): the
  reference filter and smoother on the same information as the score smoother;
- ``ETKF (spun up)``: ``diffda run`` with ``filter.method=etkf`` from cycle 0 to the window's end,
  scored over the window; it has seen ``run.start`` more cycles of observations than the smoothers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

CASES = {  # name -> (title, data overrides, smoother overrides, ETKF overrides)
    "l63-x1": ("Lorenz-63, x1 alone (identity)", ["data.preset=lorenz63",
               "data.params={steps: 25, components: [0], r: 2.0, q: 0.1, cycles: 200}"], [],
               ["filter.particles=20", "filter.inflation=1.1"]),
    "l63-abs": ("Lorenz-63, all components through abs", ["data.preset=lorenz63",
                "data.params={steps: 25, operator: abs, r: 2.0, q: 0.1, cycles: 200}"], [],
                ["filter.particles=20", "filter.inflation=1.1"]),
    "l96": ("Lorenz-96 (40), every other component", ["data.preset=lorenz96",
            "data.params={dim: 40, stride: 2, r: 1.0, q: 0.1, cycles: 200}"], [],
            ["filter.particles=40", "filter.inflation=1.05"]),
}
SMOOTHER = ["model=kde", "model.archive=8192", "model.bandwidth=0.3", "guidance.method=mmps",
            "guidance.covariance=jacobian", "smoother.jacobian=windows", "sampler.steps=32", "smoother.batch=8"]


def window_scores(mean: torch.Tensor, var: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Mean over the window's times of ``sqrt(mean_d (m - x)^2)`` and ``sqrt(mean_d var)``; ``[L, D]`` each."""
    return float(((mean - truth) ** 2).mean(-1).sqrt().mean()), float(var.mean(-1).sqrt().mean())


def particle_reference(preset: str, params: dict, y: torch.Tensor, r: float, operator: str, particles: int,
                       draws: int, seed: int) -> dict:
    """Bootstrap PF filter and FFBSi smoother of the window from the climatology: ``{name: (mean, var)}``."""
    from ..data.twins import dynamics_for, simulate_chains
    from .particle import backward_simulation, bootstrap_filter

    g = torch.Generator().manual_seed(20_000 + seed)
    m = dynamics_for(preset, params)
    x0 = simulate_chains(preset, params, particles, 0, g)[:, 0]  # climatology at the window start
    xs, logw = bootstrap_filter(m, y, r, operator, params["q"], x0, g)
    w = logw.exp()[..., None]
    fmean = (w * xs).sum(1)
    trajectories = backward_simulation(m, xs, logw, params["q"], draws, g)
    return {"filter": (fmean, (w * (xs - fmean[:, None]) ** 2).sum(1)),
            "smoother": (trajectories.mean(0), trajectories.var(0))}


def run_twins_bench(out_root: Path, cases: list[str], length: int, start: int, k: int, samples: int,
                    particles: int, overrides: list[str], log: Callable[[str], None] = lambda s: None
                    ) -> tuple[str, list[dict]]:
    import xarray as xr

    from ..commands.run import ensure_data
    from ..config import load_config
    from ..data.twins import twin_params
    from ..evaluate.report import markdown_table
    from ..problems import load_twin
    from ..run import assimilate
    from .smoother import smooth
    from .window import spec_of, window_denoiser

    rows = []
    for case in cases:
        title, data, extra, etkf = CASES[case]
        window = [*data, f"run.start={start}", f"run.cycles={length}", f"smoother.window_half_width={k}",
                  f"smoother.samples={samples}"]
        cfg = load_config(overrides=[*window, *SMOOTHER, *extra, *overrides])
        data_dir = out_root / f"data-{case}"
        ensure_data(cfg, data_dir)
        twin = load_config(overrides=window)  # model=gaussian: no transition archive to build
        p = load_twin(twin, data_dir, torch.device("cpu"), torch.float64)
        preset, attrs = p.attrs["preset"], p.attrs
        params = twin_params(preset, {a: attrs[a] for a in attrs if a not in ("preset", "cycle_hours", "dim")
                                      or (a == "dim" and preset != "lorenz63")})
        y, truth = p.obs_values, p.truth_values[1:length + 1]

        def row(method: str, mean, var, seconds: float, setting: str) -> None:
            rmse, spread = window_scores(mean, var, truth)
            rows.append(dict(case=case, title=title, method=method, rmse=rmse, spread=spread, seconds=seconds,
                             setting=setting))
            log(f"{case} {method}: RMSE {rmse:.3f} spread {spread:.3f} ({seconds:.1f} s)")

        t0 = time.perf_counter()
        den = window_denoiser(cfg, preset, params, p.state_shape[0])
        x, _ = smooth(den, y, p.noise_variance, p.operator, spec_of(cfg), cfg.run.seed, range(samples))
        row("smoother (KDE)", x.mean(0), x.var(0), time.perf_counter() - t0,
            f"k={k}, S={samples}, archive {cfg.model.archive}, bandwidth {cfg.model.bandwidth}")
        if preset == "lorenz63":
            t0 = time.perf_counter()
            ref = particle_reference(preset, params, y, p.noise_variance, p.operator, particles, 256, cfg.run.seed)
            seconds = time.perf_counter() - t0
            row("bootstrap PF filter", *ref["filter"], seconds, f"N={particles}, from the climatology")
            row("bootstrap PF smoother (FFBSi)", *ref["smoother"], seconds, f"N={particles}, M=256")
        t0 = time.perf_counter()
        run_cfg = load_config(overrides=[*data, "filter.method=etkf", f"run.cycles={start + length}", *etkf])
        assimilate(run_cfg, data_dir, out_root / f"etkf-{case}", fresh=True)
        ds = xr.open_zarr(out_root / f"etkf-{case}" / "analysis.zarr")
        rmse_t, spread_t = ds["rmse_analysis"].values[-length:], ds["spread_analysis"].values[-length:]
        rows.append(dict(case=case, title=title, method="ETKF (spun up)", rmse=float(rmse_t.mean()),
                         spread=float(spread_t.mean()), seconds=time.perf_counter() - t0,
                         setting=" ".join(etkf) + f", from cycle 0"))
        log(f"{case} ETKF: RMSE {rows[-1]['rmse']:.3f}")
    table = markdown_table(["case", "method", "setting", "RMSE", "spread", "seconds"],
                           [[r["title"], r["method"], r["setting"], f"{r['rmse']:.3f}", f"{r['spread']:.3f}",
                             f"{r['seconds']:.1f}"] for r in rows])
    body = (f"One window of L = {length} observation times (cycles {start + 1}..{start + length}) per case, "
            f"model noise q = 0.1 per cycle, the truth and observations of `diffda make-data` (seed 0); "
            f"Lorenz-63 cycles of 0.25 time units (25 RK4 steps), noise variance 2; Lorenz-96 one RK4 step "
            f"of 0.05, noise variance 1. Smoother: `diffda smooth` settings {' '.join(SMOOTHER)}, "
            f"smoother.window_half_width={k}, smoother.samples={samples}; it and the bootstrap PF rows "
            f"see the window's observations only (prior: the climatology); the ETKF row has also seen the "
            f"{start} cycles before the window. RMSE and spread: means over the window's times of the "
            f"per-time RMSE of the mean and of the ensemble spread.\n\n{table}\n")
    return body, rows
