r"""The hybrid-gain correction of the ensemble mean by a static covariance (Penny 2014's "hybrid gain";
the static part of hybrid ensemble–variational covariances, Hamill & Snyder 2000).

A 16-member ensemble estimates the cross-covariances that carry temperature observations to the winds
and the geopotential poorly, and only within its localisation radius; a static covariance ``B`` from
many samples of the same system estimates them well and over larger distances. After the ensemble
filter's analysis (weighted mean ``xbar^a``), every member is shifted by the same increment

    delta = beta (B o C) H^T [H (B o C) H^T + R]^-1 (y - H(xbar^a)),     x^a_j <- x^a_j + delta,

with ``B = Z^T Z``, ``Z`` ``[S, D]`` the static samples' anomalies divided by ``sqrt(S - 1)`` and
scaled by ``s`` (``B = s^2 Cov(samples)``; the samples are 6-hour tendencies of a training
trajectory, :mod:`pipeline.models.static_samples`), ``H`` linearised at ``xbar^a`` (``Z_o = H' Z``
``[S, M]``), and ``C`` the Gaspari–Cohn taper of the great-circle (ring) distance between columns
(half-width ``c``, zero beyond ``2 c``; model-space localisation, as in hybrid EnVar). The ``M x M``
system is solved once for all columns, then

    delta(f, p) = beta sum_s Z_s(f, p) u_s(p),    u_s(p) = sum_o Z_o[s, o] v_o C(p, col_o),
    v = [(Z_o^T Z_o) o C_oo + R]^-1 d,           d = y - H(xbar^a),

``O(S M^2 + M^3 + S M P)`` per cycle. The members' anomalies (the spread) stay the ensemble filter's.
``beta = 1`` applies the static gain to the innovation the ensemble analysis left (Penny 2014, eq. 8);
with an infinite radius and ``beta = 1`` it is the Kalman update of the mean by ``B`` to round-off
(the test's oracle).

Every rank computes the whole increment from the all-reduced analysis mean and the same samples in
the same order: the result is identical for any rank count. States ``[n, *S]`` or, with a history,
``[n, K, *S]`` (the newest state is shifted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from .base import CycleResult
from .ensemble import Ensemble, current, weighted_moments
from .localisation import Geometry, gaspari_cohn


def static_increment(z: Tensor, xbar: Tensor, obs: Observation, geometry: Geometry, radius: float | None,
                     beta: float) -> Tensor:
    """``delta`` ``[D]`` (float64) from the scaled static anomalies ``z`` ``[S, D]``, the analysis mean
    ``xbar`` ``[D]`` and the observations (see the module docstring)."""
    s, dim = z.shape
    p = geometry.n_columns
    index = obs.operator.index.cpu()
    xb = xbar.double().cpu()
    d = obs.y.double().cpu() - obs.operator(xb[None])[0].double().cpu()  # [M]
    zo = z[:, index] * obs.operator.derivative(xb[None])[0].double().cpu()  # [S, M]: H' Z
    columns = geometry.columns_of(index)
    taper = static_taper(geometry, columns, radius)  # [P, M]
    obs_taper = taper[columns]  # [M, M]
    g = (zo.T @ zo) * obs_taper + torch.diag(obs.variance.double().cpu())  # H (B o C) H^T + R
    v = torch.linalg.solve(g, d)  # [M]
    u = (zo * v) @ taper.T  # [S, P]: sum_o Z_o[s, o] v_o C(p, o)
    return beta * torch.einsum("sfp,sp->fp", z.reshape(s, -1, p), u).reshape(dim)


def static_taper(geometry: Geometry, obs_columns: Tensor, radius: float | None) -> Tensor:
    """``C(p, o) = GC(d(p, col_o) / radius)`` ``[P, M]`` (ones for an infinite radius), cached."""
    def make() -> Tensor:
        if radius is None:
            return torch.ones(geometry.n_columns, len(obs_columns), dtype=torch.float64)
        return gaspari_cohn(geometry.distances[:, obs_columns] / radius)

    return geometry.cached(("static", radius, obs_columns.numpy().tobytes()), make)


@dataclass
class StaticGain:
    comm: Comm
    anomalies: Tensor  # Z [S, D], float64, scaled: B = Z^T Z
    geometry: Geometry
    radius: float | None
    beta: float
    history: int = 1

    def __call__(self, result: CycleResult, obs: Observation) -> CycleResult:
        """``result`` with the analysis and next ensembles shifted by ``delta`` (none without observations)."""
        if obs.size == 0:
            return result
        a = result.analysis
        mean, _ = weighted_moments(self.comm, current(a.x, self.history), a.log_w)
        delta = static_increment(self.anomalies, mean.flatten(), obs, self.geometry, self.radius, self.beta)
        carry = None if result.carry is None else self._shift(result.carry, delta)
        return CycleResult(self._shift(a, delta), result.forecast_mean, result.diagnostics, carry)

    def _shift(self, ens: Ensemble, delta: Tensor) -> Ensemble:
        x = ens.x.clone()
        newest = current(x, self.history)  # a view: shifting it shifts x
        newest += delta.reshape(newest.shape[1:]).to(x.device, x.dtype)
        return Ensemble(ens.ids, x, ens.log_w)


__all__ = ["static_increment", "static_taper", "StaticGain"]
