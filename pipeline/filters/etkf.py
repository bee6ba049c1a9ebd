r"""Ensemble transform Kalman filter (Hunt et al. 2007), the baseline.

Forecast members ``x^f_i ~ p(x^{k+1} | x^k_i)`` by the (unguided) diffusion sampler; anomalies
``X = rho (x^f - xbar)`` and ``Y = rho (H(x^f) - ybar)`` with multiplicative inflation ``rho``;

    Pa = [(N - 1) I + Y^T R^-1 Y]^-1,  wbar = Pa Y^T R^-1 (y - ybar),  W = [(N - 1) Pa]^(1/2),
    x^a_i = xbar + X (wbar + W_i).

Nonlinear ``H`` is applied member by member. The transform needs the whole ensemble, so every
rank gathers it (fine for twin-sized states) and keeps its own members.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from .ensemble import Ensemble, advance, gather_ensemble, weighted_moments
from .particle import CycleResult
from .propagate import Propagator


def etkf_analysis(xf: Tensor, obs: Observation, inflation: float) -> Tensor:
    """Analysis members ``[N, *S]`` from forecast members ``[N, *S]``."""
    n = xf.shape[0]
    flat = xf.double().flatten(1)
    xbar = flat.mean(0)
    X = inflation * (flat - xbar)  # [N, D]
    hx = obs.operator(xf).double()  # [N, M]
    ybar = hx.mean(0)
    Y = inflation * (hx - ybar)  # [N, M]
    r_inv = 1.0 / obs.variance.double()
    C = (Y * r_inv) @ Y.T  # [N, N]
    evals, evecs = torch.linalg.eigh((n - 1) * torch.eye(n, dtype=torch.float64) + C)
    Pa = evecs @ torch.diag(1.0 / evals) @ evecs.T
    wbar = Pa @ (Y * r_inv) @ (obs.y.double() - ybar)
    W = evecs @ torch.diag(torch.sqrt((n - 1) / evals)) @ evecs.T
    xa = xbar + (wbar[None, :] + W.T) @ X
    return xa.reshape(xf.shape).to(xf.dtype)


@dataclass
class ETKF:
    comm: Comm
    propagator: Propagator
    inflation: float
    history: int = 1

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation, state_shape: tuple[int, ...]) -> CycleResult:
        xf = self.propagator.propagate(ens.x, ens.ids, cycle, state_shape, None)
        forecast_mean, _ = weighted_moments(self.comm, xf, ens.log_w)
        all_xf, _ = gather_ensemble(self.comm, Ensemble(ens.ids, xf, ens.log_w))
        xa = etkf_analysis(all_xf.to(xf.device), observation, self.inflation) if observation.size else all_xf
        mine = xa[ens.ids.to(xa.device)]
        n = all_xf.shape[0]
        return CycleResult(Ensemble(ens.ids, advance(ens.x, mine, self.history), ens.log_w), forecast_mean, float(n), False)

    def after_analysis(self, ens: Ensemble, cycle: int) -> tuple[Ensemble, bool]:
        return ens, False
