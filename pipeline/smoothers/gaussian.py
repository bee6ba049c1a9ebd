r"""The exact window denoiser of the stationary linear-Gaussian chain ``x' = M x + N(0, Q)`` (the oracle).

The stationary covariance solves ``P = M P M^T + Q`` (by doubling: ``P <- P + A P A^T``, ``A <- A^2``).
The joint of ``W = 2k+1`` consecutive states is ``N(0, Sigma)`` with blocks
``Sigma_{ji} = Cov(x_j, x_i) = M^{j-i} P`` for ``j >= i`` (and ``Sigma_{ij} = Sigma_{ji}^T``). With
``Sigma = U diag(lambda) U^T``,

    d(x_t, t) = E[x | x_t] = U diag(alpha_t lambda / (alpha_t^2 lambda + sigma_t^2)) U^T x_t,
    V[x | x_t] = U diag(lambda sigma_t^2 / (alpha_t^2 lambda + sigma_t^2)) U^T        (diagonal kept).

Shapes: ``x_t`` ``[B, W, D]``, ``t`` scalar or ``[B]``, condition ignored (``[B, 0]``); result ``[B, W, D]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule


def stationary_covariance(M: Tensor, Q: Tensor, iterations: int = 60) -> Tensor:
    """``P = M P M^T + Q`` for a stable ``M`` (spectral radius < 1), by doubling: ``[D, D]``."""
    P, A = Q.clone(), M.clone()
    for _ in range(iterations):
        P = P + A @ P @ A.T
        A = A @ A
    return 0.5 * (P + P.T)


def window_covariance(M: Tensor, P: Tensor, width: int) -> Tensor:
    """``Sigma`` ``[W D, W D]`` of ``W`` consecutive stationary states."""
    d = M.shape[0]
    powers = [torch.eye(d, dtype=M.dtype)]
    for _ in range(width - 1):
        powers.append(M @ powers[-1])
    S = torch.empty(width * d, width * d, dtype=M.dtype)
    for j in range(width):
        for i in range(width):
            block = powers[j - i] @ P if j >= i else (powers[i - j] @ P).T
            S[j * d:(j + 1) * d, i * d:(i + 1) * d] = block
    return 0.5 * (S + S.T)


class GaussianWindowDenoiser:
    def __init__(self, schedule: Schedule, M: Tensor, Q: Tensor, k: int):
        self.schedule, self.k, self.width, self.dim = schedule, k, 2 * k + 1, M.shape[0]
        self.P = stationary_covariance(M.double(), Q.double())
        self.covariance = window_covariance(M.double(), self.P, self.width)
        lam, U = torch.linalg.eigh(self.covariance)
        self.lam, self.U = lam.clamp(min=0.0), U

    def _coeffs(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)
        alpha, sigma = self.schedule(expand_time(t, x_t[:, :1, 0]))  # 0-d or [B, 1]
        return alpha, sigma

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        alpha, sigma = self._coeffs(x_t, t)
        U, lam = self.U.to(x_t.device, x_t.dtype), self.lam.to(x_t.device, x_t.dtype)
        alpha, sigma = alpha.to(x_t.dtype), sigma.to(x_t.dtype)
        z = x_t.flatten(1) @ U  # [B, W D]
        z = z * (alpha * lam / (alpha**2 * lam + sigma**2))
        return (z @ U.T).reshape(x_t.shape)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self._coeffs(x_t, t)
        U, lam = self.U.to(x_t.device, x_t.dtype), self.lam.to(x_t.device, x_t.dtype)
        g = lam * sigma.to(x_t.dtype) ** 2 / (alpha.to(x_t.dtype) ** 2 * lam + sigma.to(x_t.dtype) ** 2)  # [B|1, WD]
        diag = (g[..., None, :] * U**2).sum(-1)  # [B|1, W D]
        return diag.reshape(-1, self.width, self.dim).expand(x_t.shape[0], -1, -1)
