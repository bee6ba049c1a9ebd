r"""DPS (Chung et al. 2023): ``p(y | x_t) ~ N(y | H(x_hat), Sigma_y)``, ``x_hat = d(x_t, t; c)``.

    grad_{x_t} log p(y | x_t) = scale * (dH(x_hat)/dx_t)^T Sigma_y^-1 (y - H(x_hat)),
    d(x_t, t; c, y)           = x_hat + sigma_t^2 / alpha_t * grad_{x_t} log p(y | x_t),

one backward pass through the denoiser per call. ``scale`` multiplies the likelihood score (1 =
the plain Gaussian likelihood; DPS ignores ``V[x | x_t]``, so it over-trusts ``y`` at large ``t``).
Shapes: ``x_t`` ``[B, *S]``, ``t`` scalar or ``[B]``, ``condition`` ``[B, *C]``; result ``[B, *S]``, detached.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..observation import Observation
from .common import Guidance, alpha_sigma, denoise_with_graph


class DPS(Guidance):
    def __init__(self, denoiser: Denoiser, observation: Observation, scale: float = 1.0):
        if scale <= 0:
            raise ValueError(f"DPS scale must be positive; got {scale}")
        super().__init__(denoiser, observation)
        self.scale = scale

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self._obs.on(x_t)
        alpha_t, sigma_t = alpha_sigma(self.denoiser, t, x_t)
        with torch.enable_grad():
            x, x_hat = denoise_with_graph(self.denoiser, x_t, t, condition)
            r = obs.y - obs.operator(x_hat)  # [B, M]
            log_lik = -0.5 * (r**2 / obs.variance).sum()  # sum over particles: their gradients are independent
            (grad,) = torch.autograd.grad(log_lik, x)
        return (x_hat + (self.scale * sigma_t**2 / alpha_t * grad).to(x_hat.dtype)).detach()
