r"""DPS (Chung et al. 2023): ``log p(y | x_t) ~ log N(y | H(x_hat), Sigma_y)``, gradient through ``x_hat``.

    grad = - scale * grad_{x_t} 1/2 (y - H(x_hat))^T Sigma_y^-1 (y - H(x_hat)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..observation import Observation
from .common import alpha_sigma, denoise_with_graph


class DPS:
    def __init__(self, denoiser: Denoiser, observation: Observation, scale: float = 1.0):
        self.denoiser, self.observation, self.scale = denoiser, observation, scale
        self.schedule = denoiser.schedule

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self.observation
        with torch.enable_grad():
            x, x_hat = denoise_with_graph(self.denoiser, x_t, t, condition)
            r = obs.y - obs.operator(x_hat)
            log_lik = -0.5 * (r**2 / obs.variance).sum()
            (grad,) = torch.autograd.grad(log_lik, x)
        alpha, sigma = alpha_sigma(self.denoiser, t, x_t)
        return (x_hat + self.scale * sigma**2 / alpha * grad).detach()
