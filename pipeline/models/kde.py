r"""Closed-form conditional denoiser of a kernel density estimate (training-free, black-box).

From an archive of pairs ``(x_j, x'_j)``, ``j = 1..n`` (consecutive states of a long run), the KDE
of the joint with diagonal bandwidths ``h_c`` (condition) and ``h`` (next state) gives

    p(x' | x)       = sum_j w_j(x) N(x'; x'_j, diag(h^2)),  w_j(x) ∝ N(x; x_j, diag(h_c^2)),
    p(x'_t | x)     = sum_j w_j(x) N(x'_t; alpha_t x'_j, diag(alpha_t^2 h^2 + sigma_t^2)),
    d(x'_t, t; x)   = sum_j pi_j [x'_j + alpha_t h^2 / (alpha_t^2 h^2 + sigma_t^2) (x'_t - alpha_t x'_j)],

``pi_j`` the softmax of ``log w_j(x) + log N(x'_t; alpha_t x'_j, ...)`` over ``j``.

Bandwidth rule (Scott's, per component): ``h = bw * n^(-1/(d+4)) * std``, with ``d = 2D`` the
dimension of the joint, ``std`` the archive's per-component standard deviation, ``bw = 1`` unless
configured. Shapes: ``x_t`` ``[B, D]``, ``condition`` ``[B, D]``; memory ``O(B n D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule


def scott_bandwidth(samples: Tensor, joint_dim: int, factor: float = 1.0) -> Tensor:
    """``factor * n^(-1/(d+4)) * std`` per component: ``[D]``."""
    n = samples.shape[0]
    return factor * n ** (-1.0 / (joint_dim + 4)) * samples.std(0)


class KDEDenoiser:
    def __init__(self, schedule: Schedule, x_prev: Tensor, x_next: Tensor, bandwidth: float | None = None):
        if x_prev.shape != x_next.shape or x_prev.ndim != 2:
            raise ValueError(f"archive pairs must both be [n, D]; got {tuple(x_prev.shape)} and {tuple(x_next.shape)}")
        self.schedule = schedule
        self.x_prev, self.x_next = x_prev, x_next
        d = 2 * x_prev.shape[1]
        factor = 1.0 if bandwidth is None else bandwidth
        self.h_cond = scott_bandwidth(x_prev, d, factor)
        self.h = scott_bandwidth(x_next, d, factor)

    def log_weights(self, condition: Tensor) -> Tensor:
        """``log w_j(x)`` up to a constant: ``[B, n]``."""
        z = (condition[:, None, :] - self.x_prev[None]) / self.h_cond
        return -0.5 * (z**2).sum(-1)

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
        alpha, sigma = alpha[..., None], sigma[..., None]  # [B|1, 1, 1] against [B, n, D]
        if alpha.ndim == 2:
            alpha, sigma = alpha[None], sigma[None]
        h2 = self.h**2
        var = alpha**2 * h2 + sigma**2  # [.., 1, D]
        r = x_t[:, None, :] - alpha * self.x_next[None]  # [B, n, D]
        logits = self.log_weights(condition) - 0.5 * (r**2 / var + torch.log(var)).sum(-1)
        pi = torch.softmax(logits, dim=-1)  # [B, n]
        means = self.x_next[None] + alpha * h2 / var * r  # [B, n, D]
        return torch.einsum("bn,bnd->bd", pi, means)
