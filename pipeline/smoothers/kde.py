r"""The training-free KDE window denoiser: the closed-form mixture over windows cut from an archive run.

From an archive trajectory ``z_{1:n+2k}`` (or several chains) the ``n`` stacked windows ``X_j = z_{j:j+2k}`` (``W = 2k+1``
states, ``W D`` values each) give the KDE ``p(x) = 1/n sum_j N(x; X_j, diag(h^2))`` with Scott's
bandwidth ``h = bw n^(-1/(W D + 4)) std`` per entry. Noised, ``p(x_t) = 1/n sum_j N(x_t; alpha_t X_j,
diag(alpha_t^2 h^2 + sigma_t^2))``, so, with ``pi_j`` the softmax of the log of those terms,

    d(x_t, t) = sum_j pi_j m_j,   m_j = X_j + alpha_t h^2 / (alpha_t^2 h^2 + sigma_t^2) (x_t - alpha_t X_j),
    V[x | x_t] = h^2 sigma_t^2 / (alpha_t^2 h^2 + sigma_t^2) + sum_j pi_j m_j^2 - d^2   (diagonal).

(design.md §2: the KDE denoiser of Binder & Oberai, here unconditional over stacked states.)
Shapes: ``x_t`` ``[B, W, D]``, ``t`` scalar or ``[B]``, condition ignored; result ``[B, W, D]``;
time ``O(B n W D)``, memory ``O(B n + n W D)``.
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
        """All windows of ``2k+1`` consecutive states of ``trajectory`` ``[T, D]`` (``T - 2k`` of them)
        or of each of the chains ``[C, T, D]`` (``C (T - 2k)``)."""
        chains = trajectory if trajectory.ndim == 3 else trajectory[None]
        windows = chains.unfold(1, 2 * k + 1, 1).permute(0, 1, 3, 2).flatten(0, 1).contiguous()  # [n, W, D]
        return cls(schedule, windows, bandwidth)

    def _mixture(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``pi`` ``[B, n]``, the shrink ``1 - alpha c``, ``c = alpha h^2 / var`` and ``h^2 sigma^2 / var`` ``[.., W D]``.

        ``m_j = (1 - alpha c) X_j + c x_t``; the squared distances come from one matrix product of the
        whitened ``x_t / sqrt(var)`` and ``alpha X / sqrt(var)`` (no ``[B, n, W D]`` intermediate).
        """
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device),
                                                 x_t.flatten(1)))
        alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        X, h2 = self.windows.to(x_t.dtype), (self.h**2).to(x_t.dtype)
        var = alpha**2 * h2 + sigma**2  # [B or 1, W D]
        a = x_t.flatten(1) / var.sqrt()
        if var.shape[0] == 1:
            b = alpha * X / var.sqrt()  # [n, W D]
            cross, bb = a @ b.T, (b**2).sum(-1)[None]
        else:  # per-sample times: b_j = alpha X_j / sqrt(var) differs by sample
            w = alpha / var.sqrt()  # [B, W D]
            cross, bb = (a * w) @ X.T, (w**2) @ (X**2).T
        pi = torch.softmax(cross - 0.5 * bb, dim=-1)  # the |a|^2 term is the same for every j
        c = alpha * h2 / var
        return pi, 1 - alpha * c, c, h2 * sigma**2 / var

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        pi, shrink, c, _ = self._mixture(x_t, t)
        X = self.windows.to(x_t.dtype)
        return (shrink * (pi @ X) + c * x_t.flatten(1)).reshape(x_t.shape)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``within + (1 - alpha c)^2 (sum_j pi_j X_j^2 - (sum_j pi_j X_j)^2)``, diagonal, ``[B, W, D]``."""
        pi, shrink, _, within = self._mixture(x_t, t)
        X = self.windows.to(x_t.dtype)
        spread = (pi @ X**2 - (pi @ X) ** 2).clamp(min=0.0)
        return (within + shrink**2 * spread).reshape(x_t.shape)
