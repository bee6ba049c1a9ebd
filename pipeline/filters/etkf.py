r"""Ensemble transform Kalman filter (Hunt et al. 2007), the global Kalman baseline.

Forecast members ``x^f_i ~ p(x^{k+1} | x^k_i)`` by the (unguided) diffusion sampler; anomalies
``X = rho (x^f - xbar)`` and ``Y = rho (H(x^f) - ybar)`` with multiplicative inflation ``rho``;

    Pa = [(N - 1) I + Y^T R^-1 Y]^-1,  wbar = Pa Y^T R^-1 (y - ybar),  W = [(N - 1) Pa]^(1/2),
    x^a_i = xbar + X (wbar + W_i).

Nonlinear ``H`` is applied member by member. The transform needs the whole ensemble, so every
rank gathers it (fine for twin-sized states; the LETKF is the distributed one) and keeps its own
members. Members are equally weighted: ESS = N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from .base import CycleResult, Diagnostics
from .ensemble import Ensemble, advance, gather_ensemble, weighted_moments
from .propagate import Propagator


def ensemble_transforms(Y: Tensor, w: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """``(wbar [P, N], W [P, N, N])`` for ``P`` analyses at once (the LETKF's columns; one for the
    ETKF) from obs anomalies ``Y`` ``[P, N, L]`` (inflated), the (localised) ``R^-1`` diagonal ``w``
    ``[P, L]`` and innovations ``d`` ``[P, L]`` (float64; an eigendecomposition of the symmetric
    ``(N - 1) I + Y R^-1 Y^T``)."""
    n = Y.shape[1]
    eye = torch.eye(n, dtype=torch.float64, device=Y.device)
    Yw = Y * w[:, None, :]
    evals, evecs = torch.linalg.eigh((n - 1) * eye + Yw @ Y.transpose(1, 2))  # [P, N], [P, N, N]
    wbar = ((evecs / evals[:, None, :]) @ evecs.transpose(1, 2)) @ (Yw @ d[:, :, None])  # Pa Y^T R^-1 d
    W = (evecs * torch.sqrt((n - 1) / evals)[:, None, :]) @ evecs.transpose(1, 2)  # [(N - 1) Pa]^(1/2)
    return wbar[..., 0], W


def etkf_transform(Y: Tensor, d: Tensor, r_inv: Tensor) -> tuple[Tensor, Tensor]:
    """``(wbar [N], W [N, N])`` from obs anomalies ``Y`` ``[N, M]`` (inflated), innovation
    ``d = y - ybar`` ``[M]`` and ``R^-1`` diagonal ``[M]``: :func:`ensemble_transforms` of one analysis."""
    wbar, W = ensemble_transforms(Y[None], r_inv[None], d[None])
    return wbar[0], W[0]


def etkf_analysis(xf: Tensor, obs: Observation, inflation: float) -> Tensor:
    """Analysis members ``[N, *S]`` from forecast members ``[N, *S]``."""
    flat = xf.double().flatten(1)
    xbar = flat.mean(0)
    X = inflation * (flat - xbar)  # [N, D]
    hx = obs.operator(xf).double()  # [N, M]
    ybar = hx.mean(0)
    wbar, W = etkf_transform(inflation * (hx - ybar), obs.y.double() - ybar, 1.0 / obs.variance.double())
    xa = xbar + (wbar[None, :] + W.T) @ X
    return xa.reshape(xf.shape).to(xf.dtype)


@dataclass
class ETKF:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    inflation: float = 1.0
    history: int = 1

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        xf = self.propagator.propagate(ens.x, ens.ids, cycle, self.state_shape, None)
        forecast_mean, _ = weighted_moments(self.comm, xf, ens.log_w)
        all_xf, _ = gather_ensemble(self.comm, Ensemble(ens.ids, xf, ens.log_w))
        xa = etkf_analysis(all_xf.to(xf.device), observation, self.inflation) if observation.size else all_xf
        mine = xa[ens.ids.to(xa.device)].to(xf.device)
        analysis = Ensemble(ens.ids, advance(ens.x, mine, self.history), ens.log_w)
        return CycleResult(analysis, forecast_mean, Diagnostics(ess=float(all_xf.shape[0])))
