r"""MMPS (Rozet et al. 2024): ``log p(y | x_t) ~ log N(y | H(x_hat), Sigma_y + A V A^T)``,

``V = V[x | x_t] = sigma_t^2 / alpha_t * dx_hat/dx_t`` (Tweedie's covariance), ``A`` the Jacobian of
``H`` at ``x_hat``. With ``G = dH(x_hat)/dx_t = A J`` (``J = dx_hat/dx_t``, symmetric for a true
posterior-mean denoiser),

    (Sigma_y + A V A^T) v = Sigma_y v + sigma_t^2/alpha_t A (G^T v)      (one VJP per product),
    u = CG-solve(Sigma_y + A V A^T, y - H(x_hat)),                      (fixed iterations, float64)
    grad_{x_t} log p(y | x_t) = G^T u                                    (gradient through x_hat only).

Exact when the prior is Gaussian and ``H`` linear (then the posterior denoiser is exact).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..observation import Observation
from .common import alpha_sigma, denoise_with_graph


def conjugate_gradient(matvec, b: Tensor, iterations: int) -> Tensor:
    """Batched CG for SPD systems ``A x = b``, ``b`` ``[B, M]``; a fixed number of iterations."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(-1, keepdim=True)
    for _ in range(iterations):
        ap = matvec(p)
        alpha = rr / (p * ap).sum(-1, keepdim=True).clamp(min=1e-300)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum(-1, keepdim=True)
        p = r + (rr_new / rr.clamp(min=1e-300)) * p
        rr = rr_new
    return x


class MMPS:
    def __init__(self, denoiser: Denoiser, observation: Observation, cg_iterations: int = 8):
        self.denoiser, self.observation, self.iterations = denoiser, observation, cg_iterations
        self.schedule = denoiser.schedule

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self.observation
        alpha, sigma = alpha_sigma(self.denoiser, t, x_t)
        scale = (sigma**2 / alpha).flatten(1)[:, :1].double() if (sigma**2 / alpha).ndim else (sigma**2 / alpha).double()
        with torch.enable_grad():
            x, x_hat = denoise_with_graph(self.denoiser, x_t, t, condition)
            y_hat = obs.operator(x_hat)
            deriv = obs.operator.derivative(x_hat).detach().double()  # A = diag(deriv) S

            def vjp(v: Tensor) -> Tensor:  # G^T v, [B, *S]
                (g,) = torch.autograd.grad(y_hat, x, grad_outputs=v.to(y_hat.dtype), retain_graph=True)
                return g

            def matvec(v: Tensor) -> Tensor:  # (Sigma_y + A V A^T) v, float64
                gv = vjp(v).flatten(1)[:, obs.operator.index].double()
                return obs.variance.double() * v + scale * deriv * gv

            residual = (obs.y - y_hat).detach().double()
            u = conjugate_gradient(matvec, residual, self.iterations)
            grad = vjp(u)
        return (x_hat + sigma**2 / alpha * grad).detach()
