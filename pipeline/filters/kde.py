r"""The closed-form conditional diffusion filter (Binder & Oberai 2026, arXiv 2603.21291; design.md §2).

Per cycle, from the forecast members ``x_i ~ p(x^{k+1} | x^k_i)`` (unguided, one exact draw for the
twins' Gaussian denoiser) and simulated measurements ``yhat_i = H(x_i) + v_i``, ``v_i ~ N(0, Sigma_y)``
(``H`` only evaluated: black-box, no derivative ever taken), the joint of (state, measurement) is a
Gaussian kernel density

    p(x, y) = sum_i w_i N(x; x_i, diag(h_x^2)) N(y; yhat_i, diag(h_y^2)),

(``w_i`` the forecast weights, ``1/N`` after a resampled or Kalman-like cycle). Conditioned on the
observation it is the mixture ``p(x | y) = sum_i pi_i N(x; x_i, diag(h_x^2))``,
``log pi_i = log w_i - 1/2 sum_m (y_m - yhat_im)^2 / h_y,m^2 + const``, and noised,
``x_t = alpha_t x + sigma_t eps``, it stays a mixture, so its denoiser is closed-form
(:class:`KDEPosteriorDenoiser`):

    E[x | x_t, y] = sum_i softmax_i(log pi_i - sum_d r_id^2 / (2 v_d)) (x_i + alpha_t h_x^2 / v r_i),
    r_i = x_t - alpha_t x_i,   v = alpha_t^2 h_x^2 + sigma_t^2.

The analysis members are drawn from ``p(x | y)`` by reverse diffusion with it (the configured
sampler; the authors use the probability-flow ODE, ``sampler.eta = 0``), each from its own noise
stream; they are equally weighted.

Bandwidths (Scott's rule on the forecast spread, per component, over the joint's dimension
``d = D + M``): ``h_x = kde_bandwidth_x * N^(-1/(d+4)) * std(x_i)``, ``h_y = kde_bandwidth_y *
N^(-1/(d+4)) * std(yhat_i)`` (weighted standard deviations, floored at ``1e-12``). In the large-N
linear-Gaussian limit the analysis is the Kalman update with prior ``P + diag(h_x^2)`` and
observation error ``Sigma_y + diag(h_y^2)`` (the kernels add to the two covariances), so it tends to
the Kalman filter as ``h -> 0``. ``ESS`` reported is ``1 / sum_i pi_i^2``.

The whole forecast ensemble (``[N, D]`` and ``[N, M]``) is gathered on every rank (twin-sized states),
each rank samples its own members. Memory ``O(micro_batch * N * D)`` per denoiser call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.denoiser import expand_time
from ..diffusion.observation import Observation
from ..diffusion.sampler import Sampler
from ..diffusion.schedules import Schedule
from ..distributed.comm import Comm
from ..rng import ParticleNoise
from .base import CycleResult, Diagnostics
from .ensemble import Ensemble, advance, gather_ensemble, weighted_moments
from .propagate import Propagator

H_FLOOR = 1e-12


def scott_factor(n: int, joint_dim: int) -> float:
    """``n^(-1/(d+4))``, Scott's rule for a ``d``-dimensional Gaussian kernel density of ``n`` points."""
    return float(n) ** (-1.0 / (joint_dim + 4))


def weighted_std(v: Tensor, w: Tensor) -> Tensor:
    """Per-column standard deviation of ``v`` ``[N, K]`` under normalised weights ``w`` ``[N]``: ``[K]``."""
    mean = (w[:, None] * v).sum(0)
    return torch.sqrt((w[:, None] * (v - mean) ** 2).sum(0))


class KDEPosteriorDenoiser:
    """``E[x | x_t, y]`` of the mixture ``sum_i pi_i N(x; x_i, diag(h^2))`` (module docstring).

    ``centres`` ``[N, D]``, ``log_pi`` ``[N]`` (unnormalised), ``h`` ``[D]``; ``x_t`` ``[B, D]``, ``t`` scalar or
    ``[B]``; the condition is ignored (the mixture already is the conditional law). Result ``[B, D]``.
    """

    def __init__(self, schedule: Schedule, centres: Tensor, log_pi: Tensor, h: Tensor):
        self.schedule, self.centres, self.log_pi, self.h2 = schedule, centres, log_pi, h**2

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
        alpha, sigma = alpha[..., None], sigma[..., None]  # broadcast against [B, N, D]
        var = alpha**2 * self.h2 + sigma**2  # [1|B, 1, D]
        r = x_t[:, None, :] - alpha * self.centres[None]  # [B, N, D]
        logits = self.log_pi[None] - 0.5 * (r**2 / var).sum(-1)  # log det var is the same for every i
        pi = torch.softmax(logits, dim=-1)  # [B, N]
        return torch.einsum("bn,bnd->bd", pi, self.centres[None] + alpha * self.h2 / var * r)


@dataclass
class KDEFilter:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    bandwidth_x: float = 1.0
    bandwidth_y: float = 1.0
    history: int = 1

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        p = self.propagator
        xf = p.propagate(ens.x, ens.ids, cycle, self.state_shape, None)
        forecast_mean, _ = weighted_moments(self.comm, xf, ens.log_w)
        if observation.size == 0:
            return CycleResult(Ensemble(ens.ids, advance(ens.x, xf, self.history), ens.log_w), forecast_mean,
                               Diagnostics(ess=float(ens.log_w.numel())))
        with torch.no_grad():  # H is evaluated only, never differentiated
            noise = ParticleNoise(p.seed, cycle, ens.ids, "measure", xf.device, xf.dtype)
            v = noise.normal(None, (observation.size,)) * torch.sqrt(observation.variance.to(xf.device, xf.dtype))
            yhat = observation.operator(xf) + v if ens.n_local else xf.new_zeros((0, observation.size))
        all_x, all_lw = gather_ensemble(self.comm, Ensemble(ens.ids, xf.flatten(1), ens.log_w))
        all_y, _ = gather_ensemble(self.comm, Ensemble(ens.ids, yhat, ens.log_w))
        all_x, all_y = all_x.double(), all_y.double()
        n, w = all_x.shape[0], torch.exp(all_lw - torch.logsumexp(all_lw, 0))
        factor = scott_factor(n, all_x.shape[1] + all_y.shape[1])
        h_x = (self.bandwidth_x * factor * weighted_std(all_x, w)).clamp(min=H_FLOOR)
        h_y = (self.bandwidth_y * factor * weighted_std(all_y, w)).clamp(min=H_FLOOR)
        y = observation.y.double().cpu()
        log_pi = all_lw - 0.5 * (((y - all_y) / h_y) ** 2).sum(-1)
        pi = torch.exp(log_pi - torch.logsumexp(log_pi, 0))
        dev, dt = xf.device, xf.dtype
        denoiser = KDEPosteriorDenoiser(p.denoiser.schedule, all_x.to(dev, dt), log_pi.to(dev, dt), h_x.to(dev, dt))
        sampler = Sampler(denoiser, steps=p.steps, eta=p.eta, corrections=p.corrections, delta=p.delta,
                          t_min=p.t_min, grid=p.grid)
        draws = ParticleNoise(p.seed, cycle, ens.ids, "analysis", dev, dt)
        flat = (int(all_x.shape[1]),)
        out = []
        with torch.no_grad():
            for rows in p.batches(ens.n_local):
                cond = xf[rows].flatten(1)
                out.append(sampler.sample(cond, lambda rows=rows: draws.normal(rows, flat), flat))
        xa = (torch.cat(out) if out else xf.new_zeros((0, *flat))).reshape(xf.shape)
        log_w = torch.full_like(ens.log_w, -torch.log(torch.tensor(float(n), dtype=torch.float64)).item())
        analysis = Ensemble(ens.ids, advance(ens.x, xa, self.history), log_w)
        return CycleResult(analysis, forecast_mean, Diagnostics(ess=float(1.0 / (pi**2).sum())))
