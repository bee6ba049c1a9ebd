r"""The training-free KDE window denoiser: the closed-form mixture over windows cut from an archive run.

From an archive trajectory ``z_{1:n+2k}`` the ``n`` stacked windows ``X_j = z_{j:j+2k}`` (``W = 2k+1``
states, ``W D`` values each) give the KDE ``p(x) = 1/n sum_j N(x; X_j, diag(h^2))`` with Scott's
bandwidth ``h = bw n^(-1/(W D + 4)) std`` per entry. Noised, ``p(x_t) = 1/n sum_j N(x_t; alpha_t X_j,
diag(alpha_t^2 h^2 + sigma_t^2))``, so, with ``pi_j`` the softmax of the log of those terms,

    d(x_t, t) = sum_j pi_j m_j,   m_j = X_j + alpha_t h^2 / (alpha_t^2 h^2 + sigma_t^2) (x_t - alpha_t X_j),
    V[x | x_t] = h^2 sigma_t^2 / (alpha_t^2 h^2 + sigma_t^2) + sum_j pi_j m_j^2 - d^2   (diagonal).

(design.md §2: the KDE denoiser of Binder & Oberai, here unconditional over stacked states.)
Shapes: ``x_t`` ``[B, W, D]``, ``t`` scalar or ``[B]``, condition ignored; result ``[B, W, D]``;
memory ``O(B n W D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule
from ..models.kde import scott_bandwidth


class KDEWindowDenoiser:
    def __init__(self, schedule: Schedule, windows: Tensor, bandwidth: float | None = None):
        if windows.ndim != 3:
            raise ValueError(f"archive windows must be [n, W, D]; got {tuple(windows.shape)}")
        self.schedule = schedule
        self.width, self.dim = windows.shape[1], windows.shape[2]
        self.k = (self.width - 1) // 2
        self.windows = windows.flatten(1)  # [n, W D]
        self.h = scott_bandwidth(self.windows, self.windows.shape[1], 1.0 if bandwidth is None else bandwidth)

    @classmethod
    def from_trajectory(cls, schedule: Schedule, trajectory: Tensor, k: int,
                        bandwidth: float | None = None) -> "KDEWindowDenoiser":
        """All ``n = T - 2k`` windows of ``2k+1`` consecutive states of ``trajectory`` ``[T, D]``."""
        windows = trajectory.unfold(0, 2 * k + 1, 1).permute(0, 2, 1).contiguous()  # [T-2k, W, D]
        return cls(schedule, windows, bandwidth)

    def _mixture(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``pi`` ``[B, n]``, component means ``m`` ``[B, n, W D]`` and ``h^2 sigma^2 / var`` ``[.., W D]``."""
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device),
                                                 x_t.flatten(1)))
        alpha, sigma = alpha[..., None], sigma[..., None]
        if alpha.ndim == 2:
            alpha, sigma = alpha[None], sigma[None]
        X, h2 = self.windows.to(x_t.dtype), (self.h**2).to(x_t.dtype)
        var = alpha**2 * h2 + sigma**2
        r = x_t.flatten(1)[:, None, :] - alpha * X[None]  # [B, n, W D]
        pi = torch.softmax(-0.5 * (r**2 / var).sum(-1), dim=-1)  # var is the same for every j
        return pi, X[None] + alpha * h2 / var * r, h2 * sigma**2 / var

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        pi, m, _ = self._mixture(x_t, t)
        return torch.einsum("bn,bnd->bd", pi, m).reshape(x_t.shape)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        pi, m, within = self._mixture(x_t, t)
        d = torch.einsum("bn,bnd->bd", pi, m)
        v = within.reshape(-1, m.shape[-1]) + torch.einsum("bn,bnd->bd", pi, m**2) - d**2
        return v.clamp(min=0.0).reshape(x_t.shape)
