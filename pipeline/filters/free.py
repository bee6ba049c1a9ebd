r"""The free run: the ensemble propagated without observations (``filter.method=free``).

``x^{k+1}_i ~ p(x^{k+1} | x^k_i)`` by unguided reverse diffusion, weights unchanged, written in
the analysis layout: the baseline every skill table needs (what the observations bought is the
difference between a filter's analysis error and this one's).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from .base import CycleResult, Diagnostics
from .ensemble import Ensemble, advance, ess, weighted_moments
from .propagate import Propagator


@dataclass
class FreeRun:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    history: int = 1

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        x_next = self.propagator.propagate(ens.x, ens.ids, cycle, self.state_shape, None)
        forecast_mean, _ = weighted_moments(self.comm, x_next, ens.log_w)
        analysis = Ensemble(ens.ids, advance(ens.x, x_next, self.history), ens.log_w)
        return CycleResult(analysis, forecast_mean, Diagnostics(ess=ess(self.comm, ens.ids, ens.log_w)))
