r"""Local ensemble transform Kalman filter (Hunt, Kostelich & Szunyogh 2007), distributed by columns.

Per cycle: forecast members ``x^f_i`` by the (unguided) diffusion sampler; obs anomalies
``Y = rho (H(x^f) - ybar)`` ``[N, M]`` (all ranks, canonical order: obs-space only); an all-to-all
gives each rank all members on its block of columns (:mod:`.columns`). For each column ``p`` the
observations within ``2 c`` with ``R^-1`` tapered by Gaspari–Cohn, ``R_p^-1 = diag(GC(d_po / c) / r_o)``
(:mod:`.localisation`), give the local transform

    Pa_p = [(N - 1) I + Y_p^T R_p^-1 Y_p]^-1,   wbar_p = Pa_p Y_p^T R_p^-1 (y - ybar)_p,
    W_p = [(N - 1) Pa_p]^(1/2),                 x^a_j(p) = xbar(p) + sum_i X_i(p) (wbar_p + W_p)_ij,

``X = rho (x^f - xbar)`` (multiplicative inflation ``rho``, applied to the prior as in :mod:`.etkf`),
all columns at once (batched ``eigh`` over ``[P_q, N, N]``). Relaxation to prior spread (Whitaker &
Hamill 2012), per state value: ``X^a <- X^a (a sigma^f / sigma^a + 1 - a)``, ``a = rtps``, ``sigma^f``
the un-inflated forecast spread. A second all-to-all returns the analysis members. With a
denoiser conditioned on ``K`` past states the particles are ``[n, K, *S]``: the same ``wbar_p + W_p``
updates the carried past states of column ``p`` (the "no-cost smoother", Kalnay et al. 2007). With
an infinite radius every column has the global transform: the ETKF to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from .base import CycleResult, Diagnostics
from .columns import all_ids, column_block, from_columns, to_columns
from .ensemble import Ensemble, advance, gather_rows, weighted_moments
from .etkf import ensemble_transforms
from .localisation import Geometry, LocalObs, local_observations
from .propagate import Propagator


def local_transforms(Y: Tensor, d: Tensor, r_inv: Tensor, local: LocalObs) -> Tensor:
    """``T_p = wbar_p 1^T + W_p`` ``[P, N, N]`` from obs anomalies ``Y`` ``[N, M]``, innovation ``d``
    ``[M]``, ``R^-1`` ``[M]`` and the columns' tapered observations (float64)."""
    n = Y.shape[0]
    p, width = local.index.shape
    if width == 0:
        return torch.eye(n, dtype=torch.float64).expand(p, n, n).clone()
    Yl = Y.T[local.index].permute(0, 2, 1)  # [P, N, L]
    w = local.coef * r_inv[local.index]  # [P, L]: the localised R^-1
    wbar, W = ensemble_transforms(Yl, w, d[local.index])
    return wbar[:, :, None] + W


def column_analysis(xc: Tensor, T: Tensor, inflation: float, rtps: float) -> Tensor:
    """``x^a_j(f, p) = xbar(f, p) + sum_i X_i(f, p) T_p[i, j]`` with RTPS: ``xc`` ``[N, F, P]`` float64."""
    xbar = xc.mean(0)
    A = xc - xbar
    Xa = torch.einsum("ifp,pij->jfp", inflation * A, T)  # mean increment X wbar plus anomalies X W
    if rtps > 0:  # the anomalies X W have mean zero (W 1 = 1 and X^T 1 = 0): split off the increment
        n = xc.shape[0]
        inc = Xa.mean(0)
        Xa = Xa - inc
        sf = torch.sqrt((A**2).sum(0) / (n - 1))
        sa = torch.sqrt((Xa**2).sum(0) / (n - 1))
        Xa = inc + Xa * (rtps * sf / torch.where(sa > 0, sa, torch.ones_like(sa)) + 1 - rtps)
    return xbar + Xa


@dataclass
class LETKF:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    geometry: Geometry
    n_total: int
    radius: float | None = None  # Gaspari–Cohn half-width c; None = infinite
    inflation: float = 1.0
    rtps: float = 0.0
    history: int = 1

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        xf = self.propagator.propagate(ens.x, ens.ids, cycle, self.state_shape, None)
        forecast_mean, _ = weighted_moments(self.comm, xf, ens.log_w)
        x_new = advance(ens.x, xf, self.history)
        if observation.size == 0:
            return CycleResult(Ensemble(ens.ids, x_new, ens.log_w), forecast_mean, Diagnostics(ess=float(self.n_total)))
        xa = self.analysis(ens.ids, xf, x_new, observation)
        return CycleResult(Ensemble(ens.ids, xa, ens.log_w), forecast_mean, Diagnostics(ess=float(self.n_total)))

    def analysis(self, ids: Tensor, xf: Tensor, x_new: Tensor, obs: Observation) -> Tensor:
        """The analysis of this rank's members ``x_new`` (``[n, *S]`` or ``[n, K, *S]``)."""
        comm, geo, rho = self.comm, self.geometry, self.inflation
        P = geo.n_columns
        hx = obs.operator(xf).double() if len(ids) else xf.new_zeros((0, obs.size), dtype=torch.float64)
        hx = gather_rows(comm, ids, hx)[0]  # [N, M]
        ybar = hx.mean(0)
        Y, d = rho * (hx - ybar), obs.y.double().cpu() - ybar
        block = column_block(P, comm.size, comm.rank)
        local = local_observations(geo, geo.columns_of(obs.operator.index), self.radius,
                                   torch.arange(block.start, block.stop))
        T = local_transforms(Y, d, 1.0 / obs.variance.double().cpu(), local)  # [P_q, N, N]
        rank_ids = all_ids(comm, ids)
        xc = to_columns(comm, ids, x_new.reshape(len(ids), -1, P), self.n_total, rank_ids)  # [N, F, P_q]
        xa = column_analysis(xc.double().cpu(), T, rho, self.rtps).to(xc.dtype).to(xc.device)
        return from_columns(comm, xa, P, rank_ids).reshape(x_new.shape).to(x_new.device, x_new.dtype)
