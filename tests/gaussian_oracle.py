r"""Exact answers for Gaussian targets, shared by the diffusion tests (a helper, not a test module).

- ``FullGaussianDenoiser``: the exact denoiser of ``x' ~ N(mean(c), Sigma)`` with a full ``Sigma``:
  ``d = m + alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 (x_t - alpha m)``.
- ``sampler_law``: the exact output law of :class:`pipeline.diffusion.sampler.Sampler` run with the
  exact denoiser of ``N(mu, Sigma)``. Every step is then affine in ``x`` plus independent Gaussian
  noise (``x_hat = C1 x + c0``), so mean and covariance propagate exactly:
  ``m <- A m + b``, ``P <- A P A^T + tau^2 I`` (Langevin: ``+ 2 delta I``).
- ``gaussian_posterior``: ``N(mu + K (y - H mu), (I - K H) Sigma)``, ``K = Sigma H^T (H Sigma H^T + R)^-1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.diffusion.denoiser import expand_time
from pipeline.diffusion.sampler import time_grid


class FullGaussianDenoiser:
    """Exact denoiser of ``N(mean(c), Sigma)``: ``x_t`` ``[B, D]``, ``t`` scalar or ``[B]``; counts calls."""

    def __init__(self, schedule, Sigma: Tensor, mean=lambda c: c):
        self.schedule, self.Sigma, self.mean = schedule, Sigma, mean
        self.calls = 0

    def __call__(self, x_t: Tensor, t, condition: Tensor) -> Tensor:
        self.calls += 1
        t = torch.as_tensor(t, dtype=x_t.dtype)
        alpha, sigma = self.schedule(expand_time(t, x_t))  # 0-d or [B, 1]
        m = self.mean(condition)
        eye = torch.eye(self.Sigma.shape[0], dtype=x_t.dtype)
        if alpha.ndim == 0:
            gain = alpha * torch.linalg.solve(alpha**2 * self.Sigma + sigma**2 * eye, self.Sigma)  # symmetric
            return m + (x_t - alpha * m) @ gain
        a, s = alpha[:, 0, None, None], sigma[:, 0, None, None]
        gain = a * torch.linalg.solve(a**2 * self.Sigma + s**2 * eye, self.Sigma.expand(len(a), -1, -1))
        return m + torch.einsum("bi,bij->bj", x_t - alpha * m, gain)

    def covariance(self, t: float) -> Tensor:
        """``V[x' | x_t] = Sigma - alpha^2 Sigma (alpha^2 Sigma + sigma^2 I)^-1 Sigma``: ``[D, D]``."""
        alpha, sigma = self.schedule(torch.tensor(t, dtype=torch.float64))
        eye = torch.eye(self.Sigma.shape[0], dtype=torch.float64)
        return self.Sigma - alpha**2 * self.Sigma @ torch.linalg.solve(alpha**2 * self.Sigma + sigma**2 * eye, self.Sigma)


def sampler_law(schedule, steps: int, eta: float, mu: Tensor, Sigma: Tensor, corrections: int = 0,
                delta: float = 0.1, grid: str = "uniform", t_min: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and covariance ``[D, D]`` of the discretised sampler's output for ``N(mu, Sigma)``."""
    ts = time_grid(schedule, steps, t_min, grid)
    eye = torch.eye(len(mu), dtype=torch.float64)

    def coeffs(t):
        a, s = schedule(t)
        C1 = a * torch.linalg.solve(a**2 * Sigma + s**2 * eye, Sigma)  # x_hat = C1 x + c0 (C1 symmetric)
        return a, s, C1, mu - a * C1 @ mu

    a1, s1, C1, c0 = coeffs(ts[0])
    L = s1 * (eye + a1 * C1)  # x_1 = alpha_1 (C1 sigma_1 z + c0) + sigma_1 z
    m, P = a1 * c0, L @ L.T
    for t, s in zip(ts[:-1], ts[1:]):
        at, st, C1, c0 = coeffs(t)
        as_, ss, C1s, c0s = coeffs(s)
        tau = eta * ss * torch.sqrt((1 - (at * ss / (as_ * st)) ** 2).clamp(min=0))
        k = torch.sqrt((ss**2 - tau**2).clamp(min=0))
        A = as_ * C1 + k / st * (eye - at * C1)
        m, P = A @ m + (as_ - k * at / st) * c0, A @ P @ A.T + tau**2 * eye
        for _ in range(corrections):
            d = delta * ss**2
            A = eye + d * (as_ * C1s - eye) / ss**2
            m, P = A @ m + d * as_ * c0s / ss**2, A @ P @ A.T + 2 * d * eye
    _, _, C1, c0 = coeffs(ts[-1])
    return C1 @ m + c0, C1 @ P @ C1.T


def gaussian_posterior(mu: Tensor, Sigma: Tensor, H: Tensor, R: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(mu + K (y - H mu), (I - K H) Sigma)`` with ``K = Sigma H^T (H Sigma H^T + R)^-1``."""
    K = torch.linalg.solve(H @ Sigma @ H.T + R, H @ Sigma).T
    cov = (torch.eye(len(mu), dtype=mu.dtype) - K @ H) @ Sigma
    return mu + K @ (y - H @ mu), 0.5 * (cov + cov.T)


def check_moments(samples: Tensor, mean: Tensor, cov: Tensor, k: float = 5.0) -> None:
    """Sample mean, variances and covariances against exact ones, within ``k`` standard errors.

    SE of a mean ``sqrt(P_ii / n)``; of a covariance entry ``sqrt((P_ii P_jj + P_ij^2) / (n - 1))``
    (Gaussian samples; on the diagonal ``P_ii sqrt(2 / (n - 1))``).
    """
    n = samples.shape[0]
    var = torch.diagonal(cov)
    z_mean = (samples.mean(0) - mean) / (var / n).sqrt()
    assert z_mean.abs().max() < k, f"mean off by {z_mean.abs().max():.2f} SE: {z_mean}"
    se_cov = ((var[:, None] * var[None, :] + cov**2) / (n - 1)).sqrt()
    z_cov = (torch.cov(samples.T) - cov) / se_cov
    assert z_cov.abs().max() < k, f"covariance off by {z_cov.abs().max():.2f} SE"


def normal_draws(n: int, dim: int, seed: int):
    """A ``draw()`` giving ``[n, dim]`` standard normals from one seeded generator (float64)."""
    g = torch.Generator().manual_seed(seed)
    return lambda: torch.randn(n, dim, generator=g, dtype=torch.float64)


