r"""The Rauch–Tung–Striebel smoother: the exact posterior of the linear-Gaussian chain (the oracle).

Prior ``x_1 ~ N(0, P0)`` (``P0 = P_inf`` for the stationary chain), ``x_{i+1} = M x_i + N(0, Q)``,
``y_i = H_i x_i + N(0, R_i)`` with ``H_i`` selecting the entries of ``y_i`` that are not NaN.
Forward Kalman filter (``mu_i, P_i``; forecasts ``mu_f, P_f``), then backward

    G_i = P_i M^T P_f,{i+1}^-1,   m_i = mu_i + G_i (m_{i+1} - mu_f,{i+1}),
    C_i = P_i + G_i (C_{i+1} - P_f,{i+1}) G_i^T.

Shapes: ``y`` ``[L, D]`` (NaN = missing), ``variance`` scalar or ``[D]``; returns ``m`` ``[L, D]``,
``C`` ``[L, D, D]`` (float64).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rts_smoother(y: Tensor, M: Tensor, Q: Tensor, P0: Tensor, variance: float | Tensor) -> tuple[Tensor, Tensor]:
    y, M, Q, P0 = y.double(), M.double(), Q.double(), P0.double()
    L, D = y.shape
    var = torch.as_tensor(variance, dtype=torch.float64).expand(D)
    eye = torch.eye(D, dtype=torch.float64)
    mu_f, P_f = torch.zeros(D, dtype=torch.float64), P0
    mus, Ps, mufs, Pfs = [], [], [], []
    for i in range(L):
        if i > 0:
            mu_f, P_f = M @ mus[-1], M @ Ps[-1] @ M.T + Q
        obs = ~torch.isnan(y[i])
        H = eye[obs]
        if obs.any():
            S = H @ P_f @ H.T + torch.diag(var[obs])
            K = torch.linalg.solve(S, H @ P_f).T
            mu, P = mu_f + K @ (y[i][obs] - H @ mu_f), (eye - K @ H) @ P_f
        else:
            mu, P = mu_f, P_f
        mus.append(mu), Ps.append(0.5 * (P + P.T)), mufs.append(mu_f), Pfs.append(P_f)
    m, C = [mus[-1]], [Ps[-1]]
    for i in range(L - 2, -1, -1):
        G = torch.linalg.solve(Pfs[i + 1], M @ Ps[i]).T  # P_i M^T P_f^-1 (P_f symmetric)
        m.insert(0, mus[i] + G @ (m[0] - mufs[i + 1]))
        Ci = Ps[i] + G @ (C[0] - Pfs[i + 1]) @ G.T
        C.insert(0, 0.5 * (Ci + Ci.T))
    return torch.stack(m), torch.stack(C)
