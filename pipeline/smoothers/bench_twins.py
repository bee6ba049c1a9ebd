r"""``diffda bench smoother-twins``: the score smoother (KDE and trained window network) against filters.

For each case, one window of ``L`` observation times (``run.start``, ``run.cycles = L``) of a twin with
model noise ``q``; every row scores the same window (RMSE and spread of the mean over its times):

- ``smoother (KDE)``: ``diffda smooth`` with ``model=kde`` (``model.archive`` windows of ``2k+1`` states
  cut from independent runs, the bandwidth factor by likelihood cross-validation, ``model.bandwidth=cv``);
- ``smoother (network)``: ``diffda smooth`` with ``model=neural``, the window network of
  :mod:`.train_window` (``NETWORKS``: an MLP for Lorenz-63, the ring convolution for Lorenz-96) trained
  (or, when its checkpoint is complete, loaded) in ``OUT/net-<preset>-k<k>`` on a run of ``train_cycles``
  cycles of the case's chain (``diffda make-data`` with seed 1, in ``OUT/train-<preset>``; cases of one
  system share it);
- both smoothers with the same sampler and guidance (``SMOOTHER``, then the case's overrides), ``S``
  samples; they see the window's observations only, their prior is the climatology;
- ``bootstrap PF filter`` and ``bootstrap PF smoother (FFBSi)`` (:mod:`.particle`, Lorenz-63 only:
  ``N`` particles drawn from the climatology at the window start, ``M = 256`` backward trajectories): the
  reference filter and smoother on the same information as the score smoothers; with ``blur``, FFBSi
  again for each model-noise variance ``q'`` in it (the truth's is ``q``): the reference smoother given a
  model as blurred as ``q'``;
- the case's filters (``ETKF``, on Lorenz-96 also ``LETKF``), each twice: ``(from the climatology)``,
  ``diffda run`` over the window alone with the initial ensemble drawn from the networks' training run
  (``filter.init_climatology``): the filter on the same observations as the smoothers; and ``(spun up)``,
  from cycle 0 (initial ensemble around the truth) to the window's end, scored over the window: it has
  seen ``run.start`` more cycles of observations.

Every row with trajectories also gives their ``misfit``: the median over trajectories and times of the
one-step residual ``|x_{l+1} - m(x_l)|² / (D q)`` (about 1 for draws of the chain): how sharply the
trajectories follow the dynamics.

Symmetric cases (``MIRRORS``): Lorenz-63 observed through ``|x|`` cannot tell ``(x, y, z)`` from
``(-x, -y, z)`` (the dynamics and the observations are invariant), so from the climatology the exact
posterior is symmetric and the RMSE of its mean measures the symmetry, not the method. Those cases add
``RMSE mirrored``: each sampled trajectory (or backward trajectory) replaced by its mirror image when that is
closer to the truth over the window, then scored as above; what a method resolved up to the symmetry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

ETKF63 = {"ETKF (spun up)": ["filter.method=etkf", "filter.particles=20", "filter.inflation=1.1"]}
CASES = {  # name -> (title, data overrides, smoother overrides, {filter row: its overrides})
    "l63-x1": ("Lorenz-63, x1 alone (identity)", ["data.preset=lorenz63",
               "data.params={steps: 25, components: [0], r: 2.0, q: 0.1, cycles: 200}"], [], ETKF63),
    "l63-abs": ("Lorenz-63, all components through abs", ["data.preset=lorenz63",
                "data.params={steps: 25, operator: abs, r: 2.0, q: 0.1, cycles: 200}"], [], ETKF63),
    # a saturating sensor without the mirror symmetry: arctan(x) keeps the sign; noise std 0.1 rad resolves
    # x near 0 (0.1) and hardly z (at z = 25 the std in z is about 60)
    "l63-arctan": ("Lorenz-63, all components through arctan", ["data.preset=lorenz63",
                   "data.params={steps: 25, operator: arctan, r: 0.01, q: 0.1, cycles: 200}"], [], ETKF63),
    "l96": ("Lorenz-96 (40), every other component", ["data.preset=lorenz96",
            "data.params={dim: 40, stride: 2, r: 1.0, q: 0.1, cycles: 200}"],
            ["guidance.gamma=1e-4"],  # chosen at --start 120, S = 16: 0.78 / 0.75 / 0.73 for 1e-2 / 1e-3 / 1e-4
            {"ETKF (spun up)": ["filter.method=etkf", "filter.particles=40", "filter.inflation=1.05"],
             "LETKF (spun up)": ["filter.method=letkf", "filter.particles=40", "filter.inflation=1.05",
                                 "filter.localization_radius=5.0"]}),
}
MIRRORS = {"l63-abs": (-1.0, -1.0, 1.0)}  # case -> the symmetry's signs per component
SMOOTHER = ["guidance=sda", "guidance.gamma=0.01", "sampler.steps=256", "sampler.corrections=2", "smoother.batch=8"]
KDE = ["model=kde", "model.archive=8192", "model.bandwidth=cv"]  # 0.3 until 2026-12-07: 1.018 / 1.831 on l63-arctan
NETWORK = dict(batch_size=256, lr=1e-3, checkpoint_every=1000)  # with window_half_width and, per system:
NETWORKS = {"linear": dict(kind="window-mlp", hidden=256, depth=3, steps=4000),
            "lorenz63": dict(kind="window-mlp", hidden=256, depth=3, steps=4000),
            # the ring: one convolution for the 40 positions (an MLP 512x3 trained 12000 steps gave 1.41)
            "lorenz96": dict(kind="window-conv", hidden=48, depth=4, kernel=5, steps=4000)}


def window_scores(mean: Tensor, var: Tensor, truth: Tensor) -> tuple[float, float]:
    """Mean over the window's times of ``sqrt(mean_d (m - x)^2)`` and ``sqrt(mean_d var)``; ``[L, D]`` each."""
    return float(((mean - truth) ** 2).mean(-1).sqrt().mean()), float(var.mean(-1).sqrt().mean())


def mirrored_rmse(samples: Tensor, truth: Tensor, signs: tuple[float, ...]) -> float:
    """:func:`window_scores`'s RMSE of the mean of ``samples`` ``[M, L, D]``, each trajectory replaced by its
    mirror ``signs * x`` when that is closer to ``truth`` ``[L, D]`` over the window."""
    mirror = samples * torch.tensor(signs, dtype=samples.dtype)
    closer = ((mirror - truth) ** 2).sum((1, 2)) < ((samples - truth) ** 2).sum((1, 2))
    aligned = torch.where(closer[:, None, None], mirror, samples)
    return window_scores(aligned.mean(0), aligned.var(0), truth)[0]


def misfit(trajectories: Tensor, m: Callable[[Tensor], Tensor], q: float) -> float:
    """Median over trajectories and times of ``|x_{l+1} - m(x_l)|² / (D q)``, ``trajectories`` ``[M, L, D]``."""
    x = trajectories
    step = x[:, 1:] - m(x[:, :-1].reshape(-1, x.shape[-1])).reshape(x.shape[0], -1, x.shape[-1])
    return float(((step**2).mean(-1) / q).median())


def particle_reference(preset: str, params: dict, y: Tensor, r: float, operator: str, particles: int,
                       draws: int, seed: int, q: float | None = None) -> dict:
    """Bootstrap PF filter ``(mean, var)`` and FFBSi smoother trajectories ``[M, L, D]`` of the window from
    the climatology, with model-noise variance ``q`` (default: the chain's): ``{"filter": (mean, var),
    "smoother": trajectories}``."""
    from ..data.twins import dynamics_for, simulate_chains
    from .particle import backward_simulation, bootstrap_filter

    g = torch.Generator().manual_seed(20_000 + seed)
    m = dynamics_for(preset, params)
    q = params["q"] if q is None else q
    x0 = simulate_chains(preset, params, particles, 0, g)[:, 0]  # climatology at the window start
    xs, logw = bootstrap_filter(m, y, r, operator, q, x0, g)
    w = logw.exp()[..., None]
    fmean = (w * xs).sum(1)
    return {"filter": (fmean, (w * (xs - fmean[:, None]) ** 2).sum(1)),
            "smoother": backward_simulation(m, xs, logw, q, draws, g)}


def window_network(out_root: Path, preset: str, params: dict, k: int, steps: int, cycles: int,
                   log: Callable[[str], None]) -> tuple[Path, str]:
    """The window network of the case's chain (``NETWORKS[preset]``, ``steps`` if not 0): trained in
    ``out_root/net-<preset>-k<k>`` on ``out_root/train-<preset>`` (made when absent or of another system),
    or loaded when complete. Returns the checkpoint and how it was obtained (for the table)."""
    import json

    import xarray as xr

    from ..data.twins import make_twin, params_of, system_of
    from ..errors import DiffdaError
    from ..models.train import TrainOptions
    from .train_window import train_window_from_store

    system = system_of(preset, params)
    data = out_root / f"train-{preset}"
    if (data / "truth.zarr").exists():
        have = params_of(dict(xr.open_zarr(data / "truth.zarr").attrs))
        fresh = system_of(preset, have) != system or have["cycles"] != cycles
    else:
        fresh = True
    if fresh:
        t0 = time.perf_counter()
        make_twin(preset, data, {**{key: v for key, v in system.items() if key != "preset"
                                    and not (preset == "lorenz63" and key == "dim")}, "seed": 1, "cycles": cycles})
        log(f"made {cycles} cycles of {preset} in {data} ({time.perf_counter() - t0:.0f} s)")
    ckpt = out_root / f"net-{preset}-k{k}"
    if (ckpt / "meta.json").exists() and json.loads((ckpt / "meta.json").read_text())["system"] != system:
        raise DiffdaError(f"{ckpt} holds a window network of another system; remove it or choose another --out")
    recipe = {**NETWORKS[preset], **({"steps": steps} if steps else {})}
    opts = TrainOptions(window_half_width=k, **recipe, **NETWORK)
    summary = train_window_from_store(data, ckpt, opts)
    denoising = summary["denoising"]
    log(f"{ckpt}: step {summary['step']}, {summary['seconds']:.0f} s; held-out denoising RMSE network / "
        f"independent prior at sigma/s_bar {denoising['sigma']}: {denoising['rmse_network']} / {denoising['rmse_independent']}")
    net = (f"ring conv {recipe['hidden']} ch x {recipe['depth']} blocks, kernel {recipe['kernel']}"
           if recipe["kind"] == "window-conv" else f"MLP {recipe['hidden']}x{recipe['depth']}")
    what = f"{net}, {recipe['steps']} steps on {cycles} cycles"
    how = f"{what}, {summary['seconds']:.0f} s" if summary["seconds"] > 1 else f"{what}, loaded"
    return ckpt, how


def run_twins_bench(out_root: Path, cases: list[str], length: int, start: int, k: int, samples: int,
                    particles: int, net_steps: int, train_cycles: int, overrides: list[str],
                    blur: tuple[float, ...] = (),
                    log: Callable[[str], None] = lambda s: None) -> tuple[str, list[dict]]:
    import xarray as xr

    from ..commands.run import ensure_data
    from ..config import load_config
    from ..data.twins import dynamics_for, params_of
    from ..evaluate.report import markdown_table
    from ..problems import load_twin
    from ..run import assimilate
    from .smoother import smooth
    from .window import spec_of, window_denoiser

    rows = []
    for case in cases:
        title, data, extra, filters = CASES[case]
        signs = MIRRORS.get(case)
        window = [*data, f"run.start={start}", f"run.cycles={length}", f"smoother.window_half_width={k}",
                  f"smoother.samples={samples}"]
        data_dir = out_root / f"data-{case}"
        ensure_data(load_config(overrides=window), data_dir)
        p = load_twin(load_config(overrides=window), data_dir, torch.device("cpu"), torch.float64)
        preset, params = p.attrs["preset"], params_of(p.attrs)
        y, truth = p.obs_values, p.truth_values[1:length + 1]
        m = dynamics_for(preset, params)

        def row(method: str, mean, var, seconds: float, setting: str, trajectories: Tensor | None = None) -> None:
            rmse, spread = window_scores(mean, var, truth)
            mirrored = mirrored_rmse(trajectories, truth, signs) if signs and trajectories is not None else None
            fit = misfit(trajectories, m, params["q"]) if trajectories is not None else None
            rows.append(dict(case=case, title=title, method=method, rmse=rmse, spread=spread, mirrored=mirrored,
                             misfit=fit, seconds=seconds, setting=setting))
            log(f"{case} {method}: RMSE {rmse:.3f} spread {spread:.3f}"
                + (f" mirrored {mirrored:.3f}" if mirrored is not None else "")
                + (f" misfit {fit:.2f}" if fit is not None else "") + f" ({seconds:.1f} s)")

        ckpt, how = window_network(out_root, preset, params, k, net_steps, train_cycles, log)
        for name, model, setting in (
                ("smoother (KDE)", KDE, "archive 8192 windows, bandwidth factor {factor:.3g} (cross-validated)"),
                ("smoother (network)", ["model=neural", f"model.checkpoint={ckpt}"], how)):
            cfg = load_config(overrides=[*window, *model, *SMOOTHER, *extra, *overrides])
            t0 = time.perf_counter()
            den = window_denoiser(cfg, preset, params, p.state_shape[0])
            setting = setting.format(factor=getattr(den, "factor", 0.0))
            x, _ = smooth(den, y, p.noise_variance, p.operator, spec_of(cfg), cfg.run.seed, range(samples))
            row(name, x.mean(0), x.var(0), time.perf_counter() - t0,
                ", ".join([f"k={k}, S={samples}", *extra, setting]), x)
        if preset == "lorenz63":
            t0 = time.perf_counter()
            ref = particle_reference(preset, params, y, p.noise_variance, p.operator, particles, 256, cfg.run.seed)
            seconds = time.perf_counter() - t0
            row("bootstrap PF filter", *ref["filter"], seconds, f"N={particles}, from the climatology")
            tr = ref["smoother"]
            row("bootstrap PF smoother (FFBSi)", tr.mean(0), tr.var(0), seconds, f"N={particles}, M=256", tr)
            for q in blur:
                t0 = time.perf_counter()
                tr = particle_reference(preset, params, y, p.noise_variance, p.operator, particles, 256, cfg.run.seed,
                                        q)["smoother"]
                row("bootstrap PF smoother (FFBSi), blurred model", tr.mean(0), tr.var(0), time.perf_counter() - t0,
                    f"N={particles}, M=256, model noise q'={q:g} (truth: {params['q']:g})", tr)
        climatology = out_root / f"train-{preset}"  # another run of the chain (seed 1): the smoothers' prior's
        for name, filter_overrides in filters.items():
            kind = name.split()[0]
            for method, window_overrides, run_dir, how in (
                    (name, [f"run.cycles={start + length}"], out_root / f"{kind.lower()}-{case}", "from cycle 0"),
                    (f"{kind} (from the climatology)",
                     [f"run.start={start}", f"run.cycles={length}", f"filter.init_climatology={climatology}"],
                     out_root / f"{kind.lower()}-clim-{case}", "the window's observations only, from the climatology")):
                t0 = time.perf_counter()
                assimilate(load_config(overrides=[*data, *window_overrides, *filter_overrides]), data_dir, run_dir,
                           fresh=True)
                ds = xr.open_zarr(run_dir / "analysis.zarr")
                rmse_t, spread_t = ds["rmse_analysis"].values[-length:], ds["spread_analysis"].values[-length:]
                rows.append(dict(case=case, title=title, method=method, rmse=float(rmse_t.mean()),
                                 spread=float(spread_t.mean()), mirrored=None, misfit=None,
                                 seconds=time.perf_counter() - t0, setting=" ".join(filter_overrides[1:]) + ", " + how))
                log(f"{case} {method}: RMSE {rows[-1]['rmse']:.3f}")
    fmt = lambda v, digits=3: "-" if v is None else f"{v:.{digits}f}"  # noqa: E731
    table = markdown_table(["case", "method", "setting", "RMSE", "RMSE mirrored", "spread", "misfit", "seconds"],
                           [[r["title"], r["method"], r["setting"], f"{r['rmse']:.3f}", fmt(r["mirrored"]),
                             f"{r['spread']:.3f}", fmt(r["misfit"], 2), f"{r['seconds']:.1f}"] for r in rows])
    body = (f"One window of L = {length} observation times (cycles {start + 1}..{start + length}) per case, "
            f"model noise q = 0.1 per cycle, the truth and observations of `diffda make-data` (seed 0); "
            f"Lorenz-63 cycles of 0.25 time units (25 RK4 steps), observation noise variance 2 (through "
            f"arctan: 0.01, a standard deviation of 0.1 rad); Lorenz-96 one RK4 step "
            f"of 0.05, noise variance 1. Both smoothers: `diffda smooth` with {' '.join(SMOOTHER)}, "
            f"smoother.window_half_width={k}, smoother.samples={samples}, and the case's overrides in the setting; "
            f"KDE: {' '.join(KDE)}; network: `diffda train --set kind=KIND --set window_half_width={k}` (batch 256, "
            f"lr 1e-3; the MLP, window-mlp, for Lorenz-63, the ring convolution, window-conv, for Lorenz-96; size "
            f"and steps in the setting) on {train_cycles} cycles of the same chain (seed 1; held out: the last "
            f"10 %; seconds: the smoothing only, training in the setting). The smoothers and the bootstrap PF rows "
            f"see the window's observations only (prior: the climatology), as do the (L)ETKF rows "
            f"from the climatology (the initial ensemble drawn from the networks' training run: "
            f"filter.init_climatology, run.start={start}, run.cycles={length}); the spun-up (L)ETKF rows have also "
            f"seen the {start} cycles before the window and started around the truth. RMSE and spread: means over the "
            f"window's times of the per-time RMSE of the mean and of the ensemble spread; RMSE mirrored: the "
            f"same after replacing each sampled trajectory by its mirror image (-x, -y, z) where that is closer "
            f"to the truth (the |x| case's symmetry); misfit: the median one-step residual |x' - m(x)|^2 / (D q) "
            f"of the sampled trajectories (about 1 for draws of the chain).\n\n{table}\n")
    return body, rows
