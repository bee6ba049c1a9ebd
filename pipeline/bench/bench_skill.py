r"""``diffda bench skill``: forecast skill of a neural checkpoint against held-out truth.

The held-out data are the last ``val_fraction`` of the training store's times (the split the
training used, read from the checkpoint's metadata), optionally also an independent trajectory
(``--test DIR``, e.g. the default sphere data: another seed). Scores, all 6 hours ahead, latitude
weighted (:mod:`pipeline.models.skill`):

- *model, t = 1 mean*: the filter's own forecast call ``d(sigma_1 eps, 1; x^k)``, a deterministic
  estimate of ``E[x^{k+1} | x^k, x^{k-1}]`` (fp32 and bf16 autocast);
- *model ensemble*: ``members`` samples (EDM Heun sampler) per forecast, mean RMSE, spread, fair CRPS;
- *persistence* ``x^k`` (CRPS = mean absolute error) and *climatology* (the training mean; as an
  ensemble, random training states).

RMSE and CRPS "normalised" are averages over the channels in units of each channel's standard
deviation; physical columns name the channel.

Rollouts (what cycling asks of an emulator; :func:`pipeline.models.skill.rollout_skill`), on the
independent trajectory when ``--test`` is given, else on the held-out tail:

- the *mean rollout* (the ``t = 1`` mean fed back as the next condition) against persistence by
  lead, and the last lead at which it still beats persistence;
- *sampled rollouts* of ``sampled_days`` (30) days with the filter's own sampler: the fraction of
  values outside ``[min, max]`` of the training climatology (per channel, normalised) and the
  largest ``|z|``, at the last lead and the worst over all leads;
- the spread/error ratio ``sqrt((1 + 1/M) spread² / mse)`` of the sampled ensemble at 1, 4 and 16 steps.

``quick=True`` shrinks every count (a smoke run for tests, seconds on a CPU; its numbers are not skill).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..evaluate.report import markdown_table

SHOW = ("temperature@850", "geopotential@500", "u_component_of_wind@250")
UNITS = {"temperature": "K", "geopotential": "m² s⁻²", "u_component_of_wind": "m s⁻¹", "v_component_of_wind": "m s⁻¹"}


def _load(checkpoint: Path, store: Path):
    from ..models.network_checkpoint import GridLayout, check_compatible, read_meta
    from ..models.store import read_trajectory

    meta = read_meta(checkpoint)
    want = GridLayout.from_meta(meta)
    data, layout = read_trajectory(store, variables=want.variables, levels=want.levels or None)
    check_compatible(meta, layout)
    return meta, data, layout


RATIO_LEADS = (1, 4, 16)
QUICK = dict(members=2, times=2, steps=2, leads=6, sampled_days=1, starts=1, rollout_members=2)


def rollout_section(den, z: "torch.Tensor", train_z: "torch.Tensor", layout, leads: int = 60, sampled_days: int = 30,
                    starts: int = 4, members: int = 4, steps: int = 16, seed: int = 0) -> tuple[str, dict]:
    """Markdown and numbers of the rollout scores on ``z`` ``[T, C, H, W]`` (normalised)."""
    from ..models.skill import rollout_skill

    lo, hi = train_z.amin(dim=(0, 2, 3)), train_z.amax(dim=(0, 2, 3))
    sampled = 4 * sampled_days
    r = rollout_skill(den, z, layout, starts=starts, leads=leads, members=members, sampled_leads=sampled,
                      steps=steps, seed=seed, bounds=(lo, hi), margin=0.0)
    by = r["sampled"]
    n = len(by["outside"])
    until = r["beats_persistence_until"]
    out = {"beats_persistence_until_steps": until,
           "beats_persistence_until_days": None if until is None else until / 4,
           "mean_rmse": r["mean_rmse"], "persistence_rmse": r["persistence_rmse"],
           "sampled_leads_run": n, "sampled_leads": sampled,
           "outside_last": by["outside"][-1], "outside_worst": max(by["outside"]),
           "max_abs_z_last": by["max_abs"][-1], "max_abs_z_worst": max(by["max_abs"]),
           "training_max_abs_z": float(train_z.abs().max()),
           "spread_error_ratio": {lead: by["spread_error_ratio"][lead - 1] for lead in RATIO_LEADS if lead <= n},
           "spread": {lead: by["spread"][lead - 1] for lead in RATIO_LEADS if lead <= n},
           "rmse_ensemble_mean": {lead: by["rmse_ensemble_mean"][lead - 1] for lead in RATIO_LEADS if lead <= n},
           "starts": r["starts"], "members": members, "steps": steps}
    show = sorted({lead for lead in (1, 2, 4, 8, 12, 16, 20, 28, 40, 60, 80, 120) if lead <= leads} | {leads})
    rows = [[f"{lead} ({lead / 4:g} d)", f"{r['mean_rmse'][lead - 1]:.4f}", f"{r['persistence_rmse'][lead - 1]:.4f}",
             f"{1 - r['mean_rmse'][lead - 1] / r['persistence_rmse'][lead - 1]:+.1%}"] for lead in show]
    beats = (f"at every lead up to {leads} steps ({leads / 4:g} days)" if until is None
             else f"up to {until} steps ({until / 4:g} days) and not from step {until + 1} on" if until
             else "at no lead (not even 6 hours)")
    ratio_rows = [[str(lead), f"{out['rmse_ensemble_mean'][lead]:.4f}", f"{out['spread'][lead]:.4f}",
                   f"{out['spread_error_ratio'][lead]:.2f}"] for lead in RATIO_LEADS if lead <= n]
    stopped = "" if n == sampled else f" (stopped after {n} steps: non-finite states)"
    body = (
        f"Mean rollout ({r['starts']} starts; the t = 1 mean fed back), latitude-weighted RMSE in normalised "
        f"units against persistence of the start state:\n\n"
        + markdown_table(["lead (steps)", "mean rollout RMSE", "persistence RMSE", "skill vs persistence"], rows)
        + f"\n\nThe mean rollout beats persistence {beats}.\n\n"
        f"Sampled rollouts: {r['starts']} starts x {members} members, {sampled} steps ({sampled_days} days){stopped}, "
        f"each step drawn by the filter's sampler ({steps} probability-flow steps). Outside the training "
        f"climatology's [min, max] (per channel): {out['outside_last']:.2%} of values at the last lead, "
        f"{out['outside_worst']:.2%} at the worst lead; max |z| {out['max_abs_z_last']:.2f} at the last lead, "
        f"{out['max_abs_z_worst']:.2f} at the worst (training data: max |z| {out['training_max_abs_z']:.2f}).\n\n"
        + markdown_table(["lead (steps)", "ensemble-mean RMSE", "spread", "spread/error ratio"], ratio_rows)
        + "\n")
    return body, out


def run_skill(checkpoint: Path, store: Path, test: Path | None = None, members: int = 8, times: int = 16,
              steps: int = 16, seed: int = 0, log: Callable[[str], None] = lambda s: None,
              rollout: dict | None = None, quick: bool = False) -> tuple[str, dict]:
    """Markdown and numbers of ``diffda bench skill`` (``rollout``: keyword arguments of :func:`rollout_section`,
    ``None`` to skip the rollouts; ``quick``: the :data:`QUICK` counts)."""
    from ..models.neural import NeuralDenoiser
    from ..models.skill import forecast_skill, probabilistic_skill

    if quick:
        members, times, steps = QUICK["members"], QUICK["times"], QUICK["steps"]
        if rollout is not None:
            rollout = {**rollout, "leads": QUICK["leads"], "sampled_days": QUICK["sampled_days"],
                       "starts": QUICK["starts"], "members": QUICK["rollout_members"], "steps": QUICK["steps"]}

    meta, data, layout = _load(checkpoint, store)
    val_fraction = float(meta.get("training", {}).get("options", {}).get("val_fraction", 0.1))
    n_val = int(round(val_fraction * data.shape[0]))
    if n_val < 4:
        raise ValueError(f"{store}: only {n_val} held-out times (val_fraction={val_fraction}); use a longer store")
    den = NeuralDenoiser.from_checkpoint(checkpoint)
    norm = den.normalisation
    train_z = norm.normalise(data[: data.shape[0] - n_val].double()).float()
    val_z = norm.normalise(data[data.shape[0] - n_val:].double()).float()
    clim = train_z.mean(0)
    results: dict = {"val_times": n_val, "train_times": int(train_z.shape[0])}
    tic = time.perf_counter()
    results["deterministic_fp32"] = forecast_skill(den, val_z, clim, layout)
    den_bf16 = NeuralDenoiser.from_checkpoint(checkpoint, dtype=torch.bfloat16)
    results["deterministic_bf16"] = forecast_skill(den_bf16, val_z, clim, layout)
    log(f"deterministic skill in {time.perf_counter() - tic:.0f} s")
    tic = time.perf_counter()
    results["ensemble"] = probabilistic_skill(den, val_z, train_z, layout, members=members, times=times,
                                              steps=steps, seed=seed)
    log(f"ensemble skill in {time.perf_counter() - tic:.0f} s")
    test_z = None
    if test is not None:
        _, tdata, _ = _load(checkpoint, test)
        test_z = norm.normalise(tdata.double()).float()
        results["test_fp32"] = forecast_skill(den, test_z, clim, layout)
        results["test_times"] = int(tdata.shape[0])
    rollout_body = ""
    if rollout is not None:
        tic = time.perf_counter()
        on = test_z if test_z is not None else val_z
        rollout_body, results["rollout"] = rollout_section(den, on, train_z, layout, seed=seed, **rollout)
        where = f"`{test}` (independent trajectory)" if test_z is not None else "the held-out tail"
        rollout_body = f"\n### Rollouts on {where}\n\n" + rollout_body
        log(f"rollouts in {time.perf_counter() - tic:.0f} s")

    names = layout.channel_names()
    show = [n for n in SHOW if n in names]

    def unit(n: str) -> str:
        return UNITS.get(n.split("@")[0], "")

    det, det16, ens = results["deterministic_fp32"], results["deterministic_bf16"], results["ensemble"]
    header = ["forecast (6 h)", "RMSE (norm.)", "CRPS (norm.)", *[f"RMSE {n} ({unit(n)})" for n in show],
              *[f"CRPS {n} ({unit(n)})" for n in show[:1]]]
    rows = [
        ["model, t = 1 mean (fp32)", f"{det['rmse_model']:.4f}", "-",
         *[f"{det['rmse_model_physical'][n]:.3g}" for n in show], "-"],
        ["model, t = 1 mean (bf16)", f"{det16['rmse_model']:.4f}", "-",
         *[f"{det16['rmse_model_physical'][n]:.3g}" for n in show], "-"],
        [f"model ensemble ({ens['members']} members)", f"{ens['model']['rmse']:.4f}", f"{ens['model']['crps']:.4f}",
         *[f"{ens['model']['rmse_physical'][n]:.3g}" for n in show], f"{ens['model']['crps_physical'][show[0]]:.3g}"],
        ["persistence", f"{det['rmse_persistence']:.4f}", f"{ens['persistence']['crps']:.4f}",
         *[f"{det['rmse_persistence_physical'][n]:.3g}" for n in show],
         f"{ens['persistence']['crps_physical'][show[0]]:.3g}"],
        ["climatology", f"{det['rmse_climatology']:.4f}", f"{ens['climatology']['crps']:.4f}",
         *[f"{det['rmse_climatology_physical'][n]:.3g}" for n in show],
         f"{ens['climatology']['crps_physical'][show[0]]:.3g}"],
    ]
    tr = meta.get("training", {})
    opts = tr.get("options", {})
    arch = meta.get("architecture", {})
    n_params = sum(p.numel() for p in den.net.parameters())
    body = (
        f"Checkpoint `{checkpoint}`: SphereUNet base {arch.get('base')}, mults {arch.get('mults')}, "
        f"{n_params / 1e3:.0f}k parameters, history {meta.get('history')}, {len(names)} channels "
        f"({', '.join(layout.variables)} at {', '.join(f'{lv:g}' for lv in layout.levels)} hPa), trained "
        f"{tr.get('step')} steps of batch {opts.get('batch_size')} on {results['train_times']} times of `{store}`. "
        f"Held out: the last {n_val} times ({n_val / 4:.0f} days) of that store. Deterministic scores over every "
        f"held-out time; ensemble scores over {ens['times']} times, {ens['members']} members, {ens['steps']} "
        f"Heun steps; ensemble spread {ens['model']['spread']:.4f} (normalised) against ensemble-mean RMSE "
        f"{ens['model']['rmse']:.4f}.\n\n"
        + markdown_table(header, rows)
        + f"\n\nSkill of the t = 1 mean over persistence: {det['skill_vs_persistence']:.1%} (fp32), "
        f"{det16['skill_vs_persistence']:.1%} (bf16); over climatology: {det['skill_vs_climatology']:.1%}.\n"
    )
    if test is not None:
        t = results["test_fp32"]
        body += (f"\nIndependent trajectory `{test}` ({results['test_times']} times, another seed): t = 1 mean RMSE "
                 f"{t['rmse_model']:.4f}, persistence {t['rmse_persistence']:.4f}, climatology "
                 f"{t['rmse_climatology']:.4f} (normalised); {show[0]} {t['rmse_model_physical'][show[0]]:.3g} vs "
                 f"{t['rmse_persistence_physical'][show[0]]:.3g} {unit(show[0])} for persistence.\n")
    if quick:
        body = "Quick mode (`--quick`): smoke-test counts, not a measurement of skill.\n\n" + body
    return body + rollout_body, results


def run_assimilation_skill(data_dir: Path, out_root: Path, overrides: list[str], free: bool = True,
                           log: Callable[[str], None] = lambda s: None) -> tuple[str, dict]:
    """The analysis skill of a configuration against its truth, beside a free run and persistence.

    *assimilation*: ``diffda run`` with ``overrides``. *free run*: the same with observation noise of
    1e6 K (uniform weights, no guidance pull: the emulator's own ensemble forecast from the same
    start). *persistence*: the initial state kept. Scores as in ``analysis.zarr``: RMSE and CRPS over
    all channels in normalised units, unweighted, averaged over cycles; temperature RMSE in K at
    850 hPa from the written fields.
    """
    import numpy as np
    import xarray as xr

    from ..config import load_config
    from ..run import assimilate

    results: dict = {}
    cases = [("assimilation", list(overrides))]
    if free:
        cases.append(("free run (no observations)", [*overrides, "data.noise_std.temperature=1000000.0"]))
    truth = xr.open_zarr(data_dir / "truth.zarr")
    for name, ov in cases:
        cfg = load_config(overrides=ov)
        out = out_root / ("da" if name == "assimilation" else "free")
        tic = time.perf_counter()
        m = assimilate(cfg, data_dir, out, fresh=True).metrics
        wall = time.perf_counter() - tic
        ana = xr.open_zarr(out / "analysis.zarr")
        t850 = ana.temperature.sel(level=850).values
        ref = truth.temperature.sel(level=850).sel(time=ana.time.values).values
        m["t850_rmse_K"] = float(np.sqrt(((t850 - ref) ** 2).mean()))
        m["t850_rmse_by_cycle"] = np.sqrt(((t850 - ref) ** 2).mean(axis=(1, 2))).tolist()
        m["wall_total"] = wall
        results[name] = m
        log(f"{name}: rmse_a={m['rmse_analysis']:.4f} T850 {m['t850_rmse_K']:.3f} K in {wall:.0f} s")
    # persistence of the initial state, in the run's units (the checkpoint's normalisation)
    from ..models.network_checkpoint import read_meta
    from ..models.normalisation import Normalisation

    cfg = load_config(overrides=list(overrides))
    norm = Normalisation.from_dict(read_meta(cfg.model.checkpoint)["normalisation"])
    meta = read_meta(cfg.model.checkpoint)
    from ..models.store import read_trajectory
    from ..models.network_checkpoint import GridLayout

    want = GridLayout.from_meta(meta)
    data, _ = read_trajectory(data_dir, variables=want.variables, levels=want.levels)
    z = norm.normalise(data.double())
    history = int(meta.get("history", 1))
    first = cfg.run.start + history - 1
    k = results["assimilation"]["cycles"]
    pers = [float(((z[first + i] - z[first]) ** 2).mean().sqrt()) for i in range(1, k + 1)]
    t_idx = [c for c, (v, lv) in enumerate(want.channels) if v == "temperature" and lv == 850.0]
    pers_t = [float(((data[first + i, t_idx] - data[first, t_idx]) ** 2).mean().sqrt()) for i in range(1, k + 1)]
    results["persistence"] = {"rmse_analysis": float(np.mean(pers)), "t850_rmse_K": float(np.mean(pers_t)),
                              "t850_rmse_by_cycle": pers_t}
    rows = []
    for name, m in results.items():
        rows.append([name, f"{m['rmse_analysis']:.4f}", f"{m['crps_analysis']:.4f}" if "crps_analysis" in m else "-",
                     f"{m['spread_analysis']:.4f}" if "spread_analysis" in m else "-",
                     f"{m['t850_rmse_K']:.3f}", f"{m['t850_rmse_by_cycle'][-1]:.3f}",
                     f"{m['ess_mean']:.1f}" if "ess_mean" in m else "-",
                     f"{m['wall_total']:.0f}" if "wall_total" in m else "-"])
    table = markdown_table(["", "RMSE (norm.)", "CRPS (norm.)", "spread (norm.)", "T850 RMSE (K)",
                            "T850 RMSE last cycle (K)", "ESS mean", "wall s"], rows)
    body = (f"Configuration: `{' '.join('--set ' + o for o in overrides)}` on `{data_dir}` ({k} cycles). "
            "RMSE/CRPS/spread are the run's own diagnostics (all channels, normalised units, averaged over "
            "cycles); T850 from the written analysis.\n\n" + table + "\n")
    return body, results
