r"""The fully adapted particle filter with the optimal proposal (Savary, Rozet & Louppe; design.md §2).

Per cycle, on a rank's shard:

1. predictive means ``m_i = d(sigma_1 eps_i, t = 1; x^k_i) ~ E[x^{k+1} | x^k_i]`` (one denoiser call each);
2. weights ``log w_i += alpha * log N(y | H(m_i), Sigma_y [+ A V A^T])`` in float64, normalised over
   all ranks; ``+ A V A^T`` (``inflate``) is Tweedie's covariance at ``t = 1``, exact in the
   linear-Gaussian case; ``alpha = 1`` unless adaptive tempering (``band``) is on
   (:mod:`.tempering`);
3. systematic resampling with one shared uniform when ``ESS < resample_threshold * N``
   (optionally jittering duplicates, ``regularization``);
4. propagation ``x^{k+1}_i ~ p(x^{k+1} | x^k_i, y)`` by guided reverse diffusion (the proposal uses the
   true ``Sigma_y``, tempered or not).

The incremental weight does not depend on the new particle, so the analysis weights are the
ones of step 2 (uniform after a resampling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..diffusion.tweedie import obs_covariance
from ..distributed.comm import Comm
from ..rng import ParticleNoise
from .base import CycleResult, Diagnostics
from .ensemble import Ensemble, advance, global_log_weights, global_normalise, weighted_moments
from .likelihood import gaussian_log_likelihood
from .propagate import Propagator
from .resample_step import Resampler
from .tempering import adaptive_alpha


@dataclass
class OptimalProposalPF:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    resampler: Resampler
    inflate: bool = True  # weights N(y | H(m), Sigma_y + A V A^T) instead of N(y | H(m), Sigma_y)
    band: tuple[float, float] | None = None  # adaptive tempering: the ESS band as fractions of N
    history: int = 1  # particles carry the last `history` states (the denoiser's condition)
    diagonal: bool = False  # A V A^T from the denoiser's diagonal variance model (no VJPs)
    max_dense_obs: int = 2048

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        p, shape = self.propagator, self.state_shape
        m = p.predict_mean(ens.x, ens.ids, cycle, shape)
        forecast_mean, _ = weighted_moments(self.comm, m, ens.log_w)
        cov = None
        if self.inflate and observation.size > 0 and ens.n_local > 0:
            cov = self._inflation(ens, cycle, observation, m)
        hm = observation.operator(m) if ens.n_local else m.new_zeros((0, observation.size))
        log_lik = gaussian_log_likelihood(observation, hm, cov).cpu()
        alpha = 1.0
        if self.band is not None:
            alpha = adaptive_alpha(global_log_weights(self.comm, ens.ids, ens.log_w),
                                   global_log_weights(self.comm, ens.ids, log_lik), self.band)
        weighted = Ensemble(ens.ids, ens.x, global_normalise(self.comm, ens.ids, ens.log_w + alpha * log_lik))
        ens, diag = self.resampler.maybe_resample(weighted, cycle)
        diag.alpha = alpha
        x_next = p.propagate(ens.x, ens.ids, cycle, shape, observation)
        return CycleResult(Ensemble(ens.ids, advance(ens.x, x_next, self.history), ens.log_w), forecast_mean, diag)

    def _inflation(self, ens: Ensemble, cycle: int, obs: Observation, m: Tensor) -> Tensor:
        """``A V A^T`` at ``t = 1`` from the same ``sigma_1 eps`` as the predictive mean: ``[n, M, M]``,
        or its diagonal ``a^2 v[index]`` ``[n, M]`` with the diagonal variance model."""
        p = self.propagator
        one = torch.ones((), dtype=ens.x.dtype, device=ens.x.device)
        if self.diagonal:  # v depends on t only; m is the predictive mean computed already
            v = p.denoiser.variance(m, one).expand_as(m).flatten(1)[:, obs.operator.index]
            return obs.operator.derivative(m).double() ** 2 * v.double()
        if obs.size > self.max_dense_obs:
            raise ValueError(
                f"filter.weights=inflated needs an {obs.size}x{obs.size} covariance per particle; "
                f"above {self.max_dense_obs} observations use filter.weights=seed or guidance.covariance=diagonal")
        noise = ParticleNoise(p.seed, cycle, ens.ids, "predict", ens.x.device, ens.x.dtype)
        _, sigma_1 = p.denoiser.schedule(one)
        out = []
        for rows in p.batches(ens.n_local):
            x_t = sigma_1 * noise.normal(rows, self.state_shape)
            out.append(obs_covariance(p.timed, x_t, one, ens.x[rows], obs.operator).detach())
        return torch.cat(out)


__all__ = ["OptimalProposalPF", "Diagnostics"]
