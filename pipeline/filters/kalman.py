r"""The Kalman filter: the exact posterior of the linear-Gaussian twin (the oracle).

Forecast ``mu_f = M mu``, ``P_f = M P M^T + Q``; analysis with ``K = P_f H^T (H P_f H^T + R)^-1``,
``mu = mu_f + K (y - H mu_f)``, ``P = (I - K H) P_f``. Shapes: ``mu`` ``[D]``, ``P`` ``[D, D]``,
``H`` ``[M, D]``, ``y`` ``[M]``, ``R`` ``[M, M]``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kalman_step(mu: Tensor, P: Tensor, M: Tensor, Q: Tensor, H: Tensor, R: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forecast + analysis: returns ``(mu_f, P_f, mu_a, P_a)``."""
    mu_f = M @ mu
    P_f = M @ P @ M.T + Q
    S = H @ P_f @ H.T + R
    K = torch.linalg.solve(S, H @ P_f).T
    mu_a = mu_f + K @ (y - H @ mu_f)
    P_a = (torch.eye(P.shape[0], dtype=P.dtype) - K @ H) @ P_f
    return mu_f, P_f, mu_a, 0.5 * (P_a + P_a.T)


def optimal_proposal(m: Tensor, Q: Tensor, H: Tensor, R: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``p(x' | x, y) = N(m + K (y - H m), (I - K H) Q)``, ``K = Q H^T (H Q H^T + R)^-1``."""
    K = torch.linalg.solve(H @ Q @ H.T + R, H @ Q).T
    return m + (y - m @ H.T) @ K.T, (torch.eye(Q.shape[0], dtype=Q.dtype) - K @ H) @ Q


def kalman_twin_scores(truth: Tensor, y: Tensor, M: Tensor, q: float, r: float, stride: int,
                       init_std: float) -> tuple[list[float], list[float]]:
    """RMSE and spread of the exact Kalman filter on a linear twin (``y`` NaN where unobserved).

    ``truth`` ``[K+1, D]`` (cycle 0 is the initial mean, covariance ``init_std^2 I``), ``y`` ``[K, D]``.
    """
    d = truth.shape[1]
    H = torch.eye(d, dtype=torch.float64)[::stride]
    eye = torch.eye(d, dtype=torch.float64)
    mu, P, rmse, spread = truth[0].double().clone(), init_std**2 * eye, [], []
    for k in range(y.shape[0]):
        _, _, mu, P = kalman_step(mu, P, M, q * eye, H, r * torch.eye(len(H), dtype=torch.float64), y[k][::stride].double())
        rmse.append(float(((mu - truth[k + 1]) ** 2).mean().sqrt()))
        spread.append(float(torch.diagonal(P).mean().sqrt()))
    return rmse, spread
