r"""SDA (Rozet & Louppe): ``log p(y | x_t) ~ log N(y | H(x_hat), Sigma_y + sigma_t^2/alpha_t^2 gamma A A^T)``.

``A`` is the Jacobian of ``H`` at ``x_hat``; for the elementwise-select ``H`` of
:mod:`pipeline.diffusion.observation`, ``A A^T = diag(f'(x_hat[index])^2)``. The covariance is held
constant (no gradient through it); the gradient flows through ``x_hat``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..observation import Observation
from .common import alpha_sigma, denoise_with_graph


class SDA:
    def __init__(self, denoiser: Denoiser, observation: Observation, gamma: float = 1e-2):
        self.denoiser, self.observation, self.gamma = denoiser, observation, gamma
        self.schedule = denoiser.schedule

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self.observation
        alpha, sigma = alpha_sigma(self.denoiser, t, x_t)
        a2 = (sigma / alpha) ** 2
        a2 = a2.flatten(1)[:, :1] if a2.ndim else a2  # [B, 1] against [B, M]
        with torch.enable_grad():
            x, x_hat = denoise_with_graph(self.denoiser, x_t, t, condition)
            deriv = obs.operator.derivative(x_hat).detach()
            var = obs.variance + a2 * self.gamma * deriv**2
            r = obs.y - obs.operator(x_hat)
            log_lik = -0.5 * (r**2 / var).sum()
            (grad,) = torch.autograd.grad(log_lik, x)
        return (x_hat + sigma**2 / alpha * grad).detach()
