r"""SDA (Rozet & Louppe 2023): ``p(y | x_t) ~ N(y | H(x_hat), Sigma_y + sigma_t^2/alpha_t^2 gamma A A^T)``.

``x_hat = d(x_t, t; c)``; ``A`` the Jacobian of ``H`` at ``x_hat``, ``Gamma = gamma I`` a fixed prior
covariance scale. For the elementwise-select ``H`` of :mod:`pipeline.diffusion.observation`,
``A A^T = diag(f'(x_hat[index])^2)``, so with ``cov_y = Sigma_y + sigma_t^2/alpha_t^2 gamma diag(f'^2)``
(held constant: no gradient through it)

    grad_{x_t} log p(y | x_t) = (dH(x_hat)/dx_t)^T cov_y^-1 (y - H(x_hat)),
    d(x_t, t; c, y)           = x_hat + sigma_t^2 / alpha_t * grad_{x_t} log p(y | x_t).

One backward pass per call. As ``sigma_t -> 0`` it tends to DPS (and MMPS).
Shapes: ``x_t`` ``[B, *S]``, ``t`` scalar or ``[B]``; result ``[B, *S]``, detached.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..observation import Observation
from .common import Guidance, alpha_sigma, denoise_with_graph, per_particle


class SDA(Guidance):
    def __init__(self, denoiser: Denoiser, observation: Observation, gamma: float = 1e-2):
        if gamma <= 0:
            raise ValueError(f"SDA gamma must be positive; got {gamma}")
        super().__init__(denoiser, observation)
        self.gamma = gamma

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self._obs.on(x_t)
        alpha_t, sigma_t = alpha_sigma(self.denoiser, t, x_t)
        with torch.enable_grad():
            x, x_hat = denoise_with_graph(self.denoiser, x_t, t, condition)
            deriv = obs.operator.derivative(x_hat).detach()  # f'(x_hat[index]), [B, M]
            cov_y = obs.variance + per_particle((sigma_t / alpha_t) ** 2) * self.gamma * deriv**2
            r = obs.y - obs.operator(x_hat)
            log_lik = -0.5 * (r**2 / cov_y).sum()
            (grad,) = torch.autograd.grad(log_lik, x)
        return (x_hat + (sigma_t**2 / alpha_t * grad).to(x_hat.dtype)).detach()
