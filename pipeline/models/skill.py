r"""Forecast skill of a neural denoiser against persistence and climatology.

For each time ``k`` of a held-out normalised trajectory ``z`` ``[T, C, H, W]``, the forecast mean
is the filter's own ``t = 1`` call, ``m = d(sigma_1 eps, t = 1; z^{k-K+1..k}) ~ E[z^{k+1} | ...]``,
compared with persistence ``z^k`` and climatology (the training time-mean per grid point).
Scores are latitude-weighted RMSEs, ``sqrt(sum_ij w_i (f - z^{k+1})² / sum_ij w_i)``,
``w_i = cos(lat_i)``, averaged over times; per channel in physical units and, averaged over
channels, in normalised units (``rmse``). ``skill_vs_persistence = 1 - rmse_model / rmse_persistence``.

:func:`ensemble_skill` also samples forecasts (EDM's deterministic Heun sampler on
``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``, ``dz/dsigma = (z - D(z, sigma)) / sigma``)
and reports the ensemble-mean RMSE, the spread (``sqrt`` of the mean unbiased member variance)
and their ratio, which is about 1 for a calibrated model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .network_checkpoint import GridLayout
from .neural import NeuralDenoiser


def latitude_weights(latitude: tuple[float, ...] | list[float], like: Tensor) -> Tensor:
    """``[H, 1]`` weights ``cos(lat)``, normalised to mean 1."""
    w = torch.cos(torch.tensor(latitude, dtype=like.dtype, device=like.device) * math.pi / 180).clamp_min(0)
    return (w / w.mean())[:, None]


@torch.no_grad()
def forecast_skill(denoiser: NeuralDenoiser, z: Tensor, climatology: Tensor, layout: GridLayout,
                   batch: int = 16, seed: int = 0) -> dict:
    """Scores of the ``t = 1`` forecast mean, persistence and climatology on ``z`` ``[T, C, H, W]``."""
    k_hist = denoiser.history
    w = latitude_weights(layout.latitude, z)
    std = torch.tensor(denoiser.normalisation.std, dtype=z.dtype)
    g = torch.Generator().manual_seed(seed)
    sums = {name: torch.zeros(z.shape[1], dtype=torch.float64) for name in ("model", "persistence", "climatology")}
    count = 0
    device = next(denoiser.net.parameters()).device
    idx = list(range(k_hist - 1, z.shape[0] - 1))
    one = torch.ones((), dtype=z.dtype)
    _, sigma_1 = denoiser.schedule(one)
    alpha_1, _ = denoiser.schedule(one)
    for start in range(0, len(idx), batch):
        rows = idx[start: start + batch]
        cond = torch.stack([z[i - k_hist + 1: i + 1] for i in rows]).to(device)
        target = torch.stack([z[i + 1] for i in rows])
        eps = torch.randn(target.shape, generator=g, dtype=z.dtype)
        x_1 = (sigma_1 * eps).to(device)
        m = denoiser(x_1, torch.ones(len(rows), device=device), cond).cpu()
        for name, f in (("model", m), ("persistence", cond[:, -1].cpu()), ("climatology", climatology[None].expand_as(target))):
            sums[name] += ((f - target) ** 2 * w).mean(dim=(2, 3)).sum(0).double()
        count += len(rows)
    out: dict = {"times": count, "alpha_1": float(alpha_1)}
    names = layout.channel_names()
    for name, s in sums.items():
        mse = s / count  # normalised units, per channel
        out[f"rmse_{name}"] = float(mse.mean().sqrt())
        out[f"rmse_{name}_physical"] = {n: float(v) for n, v in zip(names, (mse.sqrt() * std.double()).tolist())}
    out["skill_vs_persistence"] = 1 - out["rmse_model"] / out["rmse_persistence"]
    out["skill_vs_climatology"] = 1 - out["rmse_model"] / out["rmse_climatology"]
    return out


@torch.no_grad()
def sample_edm(denoiser: NeuralDenoiser, cond: Tensor, generator: torch.Generator, steps: int = 16,
               sigma_min: float = 2e-3, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """One sample per condition ``[B, K, C, H, W]`` -> ``[B, C, H, W]`` (Heun, probability-flow ODE)."""
    i = torch.arange(steps, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = torch.cat([(a + i / max(1, steps - 1) * (b - a)) ** rho, torch.zeros(1, dtype=torch.float64)])
    shape = (cond.shape[0], *cond.shape[2:])
    z = (sigmas[0] * torch.randn(shape, generator=generator, dtype=torch.float64)).to(cond)
    n = cond.shape[0]
    for k in range(steps):
        s, s_next = float(sigmas[k]), float(sigmas[k + 1])
        d = (z - denoiser.edm(z, torch.full((n,), s, device=z.device, dtype=z.dtype), cond)) / s
        z_next = z + (s_next - s) * d
        if s_next > 0:
            d2 = (z_next - denoiser.edm(z_next, torch.full((n,), s_next, device=z.device, dtype=z.dtype), cond)) / s_next
            z_next = z + (s_next - s) * 0.5 * (d + d2)
        z = z_next
    return z


@torch.no_grad()
def ensemble_skill(denoiser: NeuralDenoiser, z: Tensor, layout: GridLayout, members: int = 8, times: int = 8,
                   steps: int = 16, seed: int = 0) -> dict:
    """Ensemble-mean RMSE, spread and spread/skill ratio (normalised units) of sampled forecasts."""
    k_hist = denoiser.history
    w = latitude_weights(layout.latitude, z)
    g = torch.Generator().manual_seed(seed)
    device = next(denoiser.net.parameters()).device
    idx = torch.linspace(k_hist - 1, z.shape[0] - 2, times).round().long().tolist()
    mse, var = 0.0, 0.0
    for i in idx:
        cond = z[i - k_hist + 1: i + 1][None].expand(members, -1, -1, -1, -1).to(device)
        ens = sample_edm(denoiser, cond, g, steps=steps).cpu()
        mean = ens.mean(0)
        mse += float(((mean - z[i + 1]) ** 2 * w).mean())
        var += float((ens.var(0) * w).mean())
    mse, var = mse / len(idx), var / len(idx)
    # the ensemble-mean error of an M-member ensemble from a calibrated model is (1 + 1/M) var
    return {"members": members, "times": len(idx), "steps": steps, "rmse_ensemble_mean": mse**0.5,
            "spread": var**0.5, "spread_skill_ratio": (var * (1 + 1 / members) / mse) ** 0.5 if mse > 0 else float("nan")}


def fair_crps(ens: Tensor, truth: Tensor, w: Tensor) -> Tensor:
    """Latitude-weighted fair CRPS per channel ``[C]`` of ``ens`` ``[M, B, C, H, W]`` against ``truth`` ``[B, C, H, W]``.

    ``CRPS = mean_m |x_m - y| - sum_{m != m'} |x_m - x_m'| / (2 M (M - 1))`` (unbiased for the
    ensemble's distribution; ``M = 1`` gives the absolute error), averaged over ``B, H, W`` with
    weights ``w`` ``[H, 1]`` (mean 1).
    """
    m = ens.shape[0]
    first = (ens - truth[None]).abs().mean(0)
    if m > 1:
        pair = (ens[:, None] - ens[None]).abs().sum((0, 1)) / (2 * m * (m - 1))
        first = first - pair
    return (first * w).mean(dim=(0, 2, 3))


@torch.no_grad()
def probabilistic_skill(denoiser: NeuralDenoiser, z: Tensor, pool: Tensor, layout: GridLayout, members: int = 8,
                        times: int = 16, steps: int = 16, seed: int = 0) -> dict:
    """Ensemble forecasts one step ahead, scored against ``z`` (normalised ``[T, C, H, W]``).

    Model: ``members`` samples of ``p(z^{k+1} | z^{k-K+1..k})`` (:func:`sample_edm`, ``steps`` Heun
    steps). Persistence: ``z^k`` (deterministic, so its CRPS is the mean absolute error).
    Climatology: ``members`` states drawn at random from ``pool`` (training states), its mean
    the pool's time mean. Per channel: latitude-weighted RMSE of the (ensemble) mean, spread, and
    fair CRPS, in normalised units and, multiplied by the channel's std, physical units.
    """
    k_hist = denoiser.history
    w = latitude_weights(layout.latitude, z)
    g = torch.Generator().manual_seed(seed)
    device = next(denoiser.net.parameters()).device
    idx = torch.linspace(k_hist - 1, z.shape[0] - 2, times).round().long().tolist()
    C = z.shape[1]
    acc = {n: {"mse": torch.zeros(C, dtype=torch.float64), "crps": torch.zeros(C, dtype=torch.float64),
               "var": torch.zeros(C, dtype=torch.float64)} for n in ("model", "persistence", "climatology")}
    clim_mean = pool.mean(0)
    for i in idx:
        truth = z[i + 1][None]
        cond = z[i - k_hist + 1: i + 1][None].expand(members, -1, -1, -1, -1).to(device)
        ens = sample_edm(denoiser, cond, g, steps=steps).cpu().float()[:, None]  # [M, 1, C, H, W]
        pick = torch.randint(pool.shape[0], (members,), generator=g)
        forecasts = {"model": (ens, ens.mean(0)), "persistence": (z[i][None, None], z[i][None]),
                     "climatology": (pool[pick][:, None], clim_mean[None])}
        for name, (e, mean) in forecasts.items():
            acc[name]["mse"] += ((mean - truth) ** 2 * w).mean(dim=(0, 2, 3)).double()
            acc[name]["crps"] += fair_crps(e, truth, w).double()
            if e.shape[0] > 1:
                acc[name]["var"] += (e.var(0) * w).mean(dim=(0, 2, 3)).double()
    std = torch.tensor(denoiser.normalisation.std, dtype=torch.float64)
    names = layout.channel_names()
    out: dict = {"members": members, "times": len(idx), "steps": steps}
    for name, a in acc.items():
        mse, crps_c, var = a["mse"] / len(idx), a["crps"] / len(idx), a["var"] / len(idx)
        out[name] = {
            "rmse": float(mse.mean().sqrt()), "crps": float(crps_c.mean()), "spread": float(var.mean().sqrt()),
            "rmse_physical": {n: float(v) for n, v in zip(names, (mse.sqrt() * std).tolist())},
            "crps_physical": {n: float(v) for n, v in zip(names, (crps_c * std).tolist())},
        }
    return out


@torch.no_grad()
def rollout_skill(denoiser: NeuralDenoiser, z: Tensor, layout: GridLayout, starts: int = 4, leads: int = 60,
                  members: int = 4, sampled_leads: int = 120, steps: int = 16, seed: int = 0,
                  bounds: tuple[Tensor, Tensor] | None = None, batch: int = 16, margin: float = 0.1) -> dict:
    r"""Multi-step skill: what cycling asks of an emulator.

    - *mean rollout*: from ``starts`` start times of ``z`` ``[T, C, H, W]`` (normalised), the ``t = 1``
      mean fed back as the next condition for ``leads`` steps; latitude-weighted RMSE against the
      truth and against persistence (``z`` at the start) by lead, averaged over starts, and the
      first lead at which the rollout stops beating persistence (``None``: never within ``leads``);
    - *sampled rollout*: ``members`` rollouts per start, each step sampled by the filter's own
      sampler (the denoiser's schedule, ``steps`` probability-flow steps), for ``sampled_leads``
      steps; by lead, the ensemble-mean RMSE, the spread and their ratio
      ``sqrt((1 + 1/M) var / mse)`` (1 when calibrated), the largest ``|z|`` and the fraction of
      values outside the climatological range ``bounds = (lo [C], hi [C])`` widened by ``margin``
      (10 %) of its width on each side. The starts leave room for ``leads`` true states; sampled
      leads beyond the end of ``z`` are run (range, ``|z|``, spread) but not scored (NaN RMSE).
    """
    from ..diffusion.sampler import Sampler

    k_hist = denoiser.history
    w = latitude_weights(layout.latitude, z)
    device = next(denoiser.net.parameters()).device
    total = leads
    if z.shape[0] - 1 - total < k_hist - 1:
        raise ValueError(f"trajectory of {z.shape[0]} times is too short for {total} leads")
    first = torch.linspace(k_hist - 1, z.shape[0] - 1 - total, starts).round().long().tolist()
    g = torch.Generator().manual_seed(seed)
    one = torch.ones((), dtype=z.dtype)
    _, sigma_1 = denoiser.schedule(one)

    def score(f: Tensor, target: Tensor) -> Tensor:  # [B, C, H, W] -> mse per sample [B]
        return ((f - target) ** 2 * w).mean(dim=(1, 2, 3))

    # mean rollout, all starts in one batch
    cond = torch.stack([z[i - k_hist + 1: i + 1] for i in first]).to(device)
    persistence = torch.stack([z[i] for i in first])
    mse_model, mse_pers = [], []
    for lead in range(1, leads + 1):
        target = torch.stack([z[i + lead] for i in first])
        x_1 = (sigma_1 * torch.randn(target.shape, generator=g, dtype=z.dtype)).to(device)
        m = denoiser(x_1, torch.ones(len(first), device=device, dtype=z.dtype), cond)
        cond = torch.cat([cond[:, 1:], m[:, None]], dim=1)
        mse_model.append(float(score(m.cpu(), target).mean()))
        mse_pers.append(float(score(persistence, target).mean()))
    rmse_model = [v**0.5 for v in mse_model]
    rmse_pers = [v**0.5 for v in mse_pers]
    worse = [lead for lead, (a, b) in enumerate(zip(rmse_model, rmse_pers), start=1) if a >= b]

    # sampled rollouts
    sampler = Sampler(denoiser, steps=steps)
    lo, hi = bounds if bounds is not None else (z.amin(dim=(0, 2, 3)), z.amax(dim=(0, 2, 3)))
    width = hi - lo
    lo_c, hi_c = (lo - margin * width)[:, None, None], (hi + margin * width)[:, None, None]
    cond = torch.stack([z[i - k_hist + 1: i + 1] for i in first for _ in range(members)]).to(device)
    by_lead = {"rmse_ensemble_mean": [], "spread": [], "spread_error_ratio": [], "max_abs": [], "outside": []}
    for lead in range(1, sampled_leads + 1):
        outs = []
        for b0 in range(0, cond.shape[0], batch):
            c = cond[b0: b0 + batch]
            draw = lambda c=c: torch.randn((c.shape[0], *c.shape[2:]), generator=g, dtype=z.dtype).to(device)  # noqa: E731
            outs.append(sampler.sample(c, draw, tuple(c.shape[2:])))
        x = torch.cat(outs)
        cond = torch.cat([cond[:, 1:], x[:, None]], dim=1)
        ens = x.cpu().reshape(len(first), members, *x.shape[1:])
        var = float((ens.var(1) * w).mean()) if members > 1 else 0.0
        if max(first) + lead < z.shape[0]:
            target = torch.stack([z[i + lead] for i in first])
            mse = float(score(ens.mean(1), target).mean())
        else:
            mse = float("nan")
        by_lead["rmse_ensemble_mean"].append(mse**0.5)
        by_lead["spread"].append(var**0.5)
        by_lead["spread_error_ratio"].append(((1 + 1 / members) * var / mse) ** 0.5 if mse > 0 else float("nan"))  # NaN > 0 is False
        by_lead["max_abs"].append(float(ens.abs().max()))
        by_lead["outside"].append(float(((ens < lo_c) | (ens > hi_c)).double().mean()))
        if not torch.isfinite(ens).all():
            break
    return {"starts": len(first), "leads": leads, "members": members, "steps": steps,
            "mean_rmse": rmse_model, "persistence_rmse": rmse_pers,
            "beats_persistence_until": (worse[0] - 1) if worse else None, "sampled": by_lead}
