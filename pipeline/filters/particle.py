r"""Particle filters, one assimilation cycle each, on a rank's shard.

**Fully adapted (optimal proposal)**, design.md §2: weight with ``p(y^{k+1} | x^k_i)``, resample,
then propagate ``x^{k+1}_i ~ p(x^{k+1} | x^k_i, y^{k+1})`` by guided reverse diffusion:

- ``seed`` weights: ``N(y | H(m_i), Sigma_y)``, ``m_i = d(sigma_1 eps, 1; x^k_i)``;
- ``inflated`` weights: ``N(y | H(m_i), Sigma_y + A V A^T)``, ``V`` Tweedie's covariance at ``t = 1``
  (exact in the linear-Gaussian case).

**Bootstrap**: propagate from the prior, weight with ``N(y | H(x^{k+1}_i), Sigma_y)``, resample.

Resampling is systematic when ``ESS / N`` falls below the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..diffusion.tweedie import obs_covariance
from ..distributed.comm import Comm
from ..rng import shared_uniform
from .ensemble import Ensemble, advance, ess, global_normalise, weighted_moments
from .propagate import Propagator
from .resample_step import ResampleStats, resample


@dataclass
class CycleResult:
    ensemble: Ensemble
    forecast_mean: Tensor
    ess: float
    resampled: bool


def gaussian_log_likelihood(observation: Observation, hx: Tensor, cov: Tensor | None = None) -> Tensor:
    """``log N(y | hx_i, Sigma_y [+ cov_i])`` in float64: ``hx`` ``[B, M]``, ``cov`` ``[B, M, M]`` or
    its diagonal ``[B, M]``."""
    if cov is None:
        return observation.log_likelihood(hx)
    if cov.ndim == 2:
        r = observation.y.double() - hx.double()
        var = observation.variance.double() + cov.double()
        return -0.5 * (r**2 / var + torch.log(2 * torch.pi * var)).sum(-1)
    r = (observation.y.double() - hx.double())  # [B, M]
    s = cov.double() + torch.diag_embed(observation.variance.double()).expand_as(cov)
    chol = torch.linalg.cholesky(s)
    z = torch.linalg.solve_triangular(chol, r[..., None], upper=False)[..., 0]
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z**2).sum(-1) + logdet + r.shape[-1] * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64)))


@dataclass
class ParticleFilter:
    comm: Comm
    propagator: Propagator
    n_total: int
    method: str  # "pf-optimal" | "pf-bootstrap"
    weights: str  # "seed" | "inflated"
    resample_threshold: float
    regularization: float
    seed: int
    history: int = 1  # particles carry the last `history` states (the denoiser's condition)
    max_inflated_obs: int = 2048
    stats: ResampleStats = field(default_factory=ResampleStats)
    resample_seconds: float = 0.0

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation, state_shape: tuple[int, ...]) -> CycleResult:
        if self.method == "pf-optimal":
            return self._optimal(ens, cycle, observation, state_shape)
        return self._bootstrap(ens, cycle, observation, state_shape)

    def _maybe_resample(self, ens: Ensemble, cycle: int) -> tuple[Ensemble, float, bool]:
        e = ess(self.comm, ens.ids, ens.log_w)
        if e < self.resample_threshold * self.n_total:
            u = shared_uniform(self.seed, cycle)
            start = time.perf_counter()
            ens = resample(self.comm, ens, u, self.n_total, self.regularization, self.seed, cycle, self.stats)
            self.resample_seconds += time.perf_counter() - start
            return ens, e, True
        return ens, e, False

    def _optimal(self, ens: Ensemble, cycle: int, obs: Observation, shape: tuple[int, ...]) -> CycleResult:
        p = self.propagator
        m = p.predict_mean(ens.x, ens.ids, cycle, shape)
        forecast_mean, _ = weighted_moments(self.comm, m, ens.log_w)
        cov = None
        if self.weights == "inflated" and obs.size > 0 and ens.n_local > 0:
            if obs.size > self.max_inflated_obs and not self.diagonal:
                raise ValueError(
                    f"filter.weights=inflated needs an {obs.size}x{obs.size} covariance per particle; "
                    f"above {self.max_inflated_obs} observations use filter.weights=seed "
                    f"or guidance.covariance=diagonal")
            cov = self._inflation(ens, cycle, shape, obs, m)
        hm = obs.operator(m) if ens.n_local else m.new_zeros((0, obs.size))
        log_lik = gaussian_log_likelihood(obs, hm, cov).cpu()
        ens = Ensemble(ens.ids, ens.x, global_normalise(self.comm, ens.ids, ens.log_w + log_lik))
        ens, e, resampled = self._maybe_resample(ens, cycle)
        x_next = p.propagate(ens.x, ens.ids, cycle, shape, obs)
        return CycleResult(Ensemble(ens.ids, advance(ens.x, x_next, self.history), ens.log_w), forecast_mean, e, resampled)

    @property
    def diagonal(self) -> bool:
        """Whether guidance uses the denoiser's diagonal variance model (then so do the weights)."""
        return self.propagator.guidance_options.get("covariance") == "diagonal"

    def _inflation(self, ens: Ensemble, cycle: int, shape: tuple[int, ...], obs: Observation, m: Tensor) -> Tensor:
        """``A V A^T`` at ``t = 1`` from the same ``sigma_1 eps`` as the predictive mean: ``[n, M, M]``,
        or its diagonal ``a^2 v[index]`` ``[n, M]`` with ``guidance.covariance=diagonal``."""
        from ..rng import ParticleNoise

        p = self.propagator
        one = torch.ones((), dtype=ens.x.dtype, device=ens.x.device)
        if self.diagonal:  # v depends on t only; m is the predictive mean computed already
            v = p.denoiser.variance(m, one).expand_as(m).flatten(1)[:, obs.operator.index]
            return obs.operator.derivative(m).double() ** 2 * v.double()
        noise = ParticleNoise(p.seed, cycle, ens.ids.tolist(), "predict", ens.x.device, ens.x.dtype)
        _, sigma_1 = p.denoiser.schedule(one)
        out = []
        for rows in p._batches(ens.n_local):
            x_t = sigma_1 * noise.normal(rows, shape)
            out.append(obs_covariance(p.timed, x_t, one, ens.x[rows], obs.operator).detach())
        return torch.cat(out)

    def _bootstrap(self, ens: Ensemble, cycle: int, obs: Observation, shape: tuple[int, ...]) -> CycleResult:
        x_next = self.propagator.propagate(ens.x, ens.ids, cycle, shape, None)
        forecast_mean, _ = weighted_moments(self.comm, x_next, ens.log_w)
        hx = obs.operator(x_next) if ens.n_local else x_next.new_zeros((0, obs.size))
        log_w = global_normalise(self.comm, ens.ids, ens.log_w + gaussian_log_likelihood(obs, hx).cpu())
        analysed = Ensemble(ens.ids, advance(ens.x, x_next, self.history), log_w)
        return CycleResult(analysed, forecast_mean, ess(self.comm, ens.ids, log_w), False)

    def after_analysis(self, ens: Ensemble, cycle: int) -> tuple[Ensemble, bool]:
        """Bootstrap only: resample after the analysis has been written."""
        if self.method != "pf-bootstrap":
            return ens, False
        ens, _, resampled = self._maybe_resample(ens, cycle)
        return ens, resampled
