r"""The η-sampler of the reverse SDE, with optional Langevin corrections (Rozet & Louppe, SDA).

On a grid ``1 = t_0 > t_1 > ... > t_T = t_min`` each step from ``t`` to ``s`` is the exponential
integrator (DDIM) with ``η`` noise:

    x_hat = d(x_t, t; c),   eps_hat = (x_t - alpha_t x_hat) / sigma_t,
    tau   = η sigma_s sqrt(1 - (alpha_t sigma_s / (alpha_s sigma_t))^2),
    x_s   = alpha_s x_hat + sqrt(sigma_s^2 - tau^2) eps_hat + tau z,

``η = 0`` the probability-flow ODE (equal to design.md's predictor
``x_s = (alpha_s/alpha_t) x_t + (alpha_s/alpha_t - sigma_s/sigma_t) sigma_t^2 s(x_t)``), ``η = 1`` the
DDPM ancestral step (the exact Gaussian posterior ``q(x_s | x_t, x_hat)``). After each step, ``C``
Langevin corrections ``x <- x + δ s(x) + sqrt(2 δ) z`` with ``δ = delta · sigma_s^2``. The sample is
the denoiser mean at ``t_min``. The sampler starts from ``x_1 = alpha_1 d(sigma_1 z, 1; c) + sigma_1 z``:
the noisy marginal at ``t = 1`` is ``N(alpha_1 E[x|c], ...)``, and starting from ``sigma_1 z`` alone would
leave a bias of the data mean that no number of ODE steps removes (large for VE/EDM schedules whose
``sigma_max`` is not far above the data scale).

All noise comes from ``draw()`` (the caller's per-particle streams): the sampler never calls the
global RNG, so results do not depend on how particles are batched.
Shapes: ``condition`` ``[B, *C]``, ``draw() -> [B, *S]``, result ``[B, *S]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .denoiser import Denoiser
from .schedules import Schedule


def time_grid(schedule: Schedule, steps: int, t_min: float = 1e-3, grid: str = "uniform",
              dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """``[steps + 1]`` times from 1 down to ``t_min``: uniform in ``t`` or in ``log(alpha/sigma)``."""
    if grid == "uniform":
        return torch.linspace(1.0, t_min, steps + 1, dtype=dtype, device=device)
    if grid == "log-snr":
        fine = torch.linspace(1.0, t_min, 4097, dtype=torch.float64)
        alpha, sigma = schedule(fine)
        lam = torch.log(alpha / sigma)
        targets = torch.linspace(float(lam[0]), float(lam[-1]), steps + 1, dtype=torch.float64)
        idx = torch.searchsorted(lam.contiguous(), targets.contiguous()).clamp(1, len(fine) - 1)
        lo, hi = lam[idx - 1], lam[idx]
        frac = ((targets - lo) / (hi - lo).clamp(min=1e-30)).clamp(0, 1)
        t = fine[idx - 1] + frac * (fine[idx] - fine[idx - 1])
        t[0], t[-1] = 1.0, t_min
        return t.to(dtype=dtype, device=device)
    raise ValueError(f"unknown time grid {grid!r}; choose 'uniform' or 'log-snr'")


class Sampler:
    def __init__(self, denoiser: Denoiser, steps: int, eta: float = 1.0, corrections: int = 0,
                 delta: float = 0.1, t_min: float = 1e-3, grid: str = "uniform"):
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.denoiser, self.steps, self.eta = denoiser, steps, eta
        self.corrections, self.delta, self.t_min, self.grid = corrections, delta, t_min, grid

    def sample(self, condition: Tensor, draw: Callable[[], Tensor], shape: Sequence[int]) -> Tensor:
        d, schedule = self.denoiser, self.denoiser.schedule
        dtype, device = condition.dtype, condition.device
        ts = time_grid(schedule, self.steps, self.t_min, self.grid, dtype, device)
        alpha_1, sigma_1 = schedule(ts[0])
        z = draw()
        x = alpha_1 * d(sigma_1 * z, ts[0], condition) + sigma_1 * z
        for t, s in zip(ts[:-1], ts[1:]):
            alpha_t, sigma_t = schedule(t)
            alpha_s, sigma_s = schedule(s)
            x_hat = d(x, t, condition)
            eps_hat = (x - alpha_t * x_hat) / sigma_t
            ratio = (alpha_t * sigma_s) / (alpha_s * sigma_t)
            tau = self.eta * sigma_s * torch.sqrt((1 - ratio**2).clamp(min=0.0))
            x = alpha_s * x_hat + torch.sqrt((sigma_s**2 - tau**2).clamp(min=0.0)) * eps_hat
            if self.eta > 0:
                x = x + tau * draw()
            for _ in range(self.corrections):
                delta = self.delta * sigma_s**2
                score = (alpha_s * d(x, s, condition) - x) / sigma_s**2
                x = x + delta * score + torch.sqrt(2 * delta) * draw()
        return d(x, ts[-1], condition)
