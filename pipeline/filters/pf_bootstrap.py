r"""The bootstrap particle filter (Gordon et al. 1993): propagate from the prior, weigh, resample.

Per cycle: ``x^{k+1}_i ~ p(x^{k+1} | x^k_i)`` by unguided reverse diffusion; ``log w_i +=
log N(y | H(x^{k+1}_i), Sigma_y)`` (float64, normalised over all ranks); the weighted ensemble is
the analysis; then systematic resampling (with optional jitter of duplicates, DAPPER's ``reg``)
when ``ESS < resample_threshold * N``, and the next cycle starts from the resampled ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from .base import CycleResult
from .ensemble import Ensemble, advance, global_normalise, weighted_moments
from .likelihood import gaussian_log_likelihood
from .propagate import Propagator
from .resample_step import Resampler


@dataclass
class BootstrapPF:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    resampler: Resampler
    history: int = 1

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        x_next = self.propagator.propagate(ens.x, ens.ids, cycle, self.state_shape, None)
        forecast_mean, _ = weighted_moments(self.comm, x_next, ens.log_w)
        hx = observation.operator(x_next) if ens.n_local else x_next.new_zeros((0, observation.size))
        log_w = global_normalise(self.comm, ens.ids, ens.log_w + gaussian_log_likelihood(observation, hx).cpu())
        analysis = Ensemble(ens.ids, advance(ens.x, x_next, self.history), log_w)
        carry, diag = self.resampler.maybe_resample(analysis, cycle)
        return CycleResult(analysis, forecast_mean, diag, carry=carry)
