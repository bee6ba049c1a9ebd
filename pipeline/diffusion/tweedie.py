r"""Tweedie's covariance in observation space, for the filter's ``inflated`` weights.

    A V A^T,  V = sigma_t^2 / alpha_t * dx_hat/dx_t,  x_hat = d(x_t, t; c),  A = dH/dx at x_hat,

computed column by column: ``A V A^T e_j = sigma_t^2/alpha_t * A (G^T e_j)`` with ``G = A J`` (one
vector-Jacobian product per observation, batched over particles): cost ``O(M)`` backward passes.
Shapes: ``x_t`` ``[B, *S]``, result ``[B, M, M]`` (float64, symmetrised).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser, expand_time
from .observation import ObservationOperator


def obs_covariance(denoiser: Denoiser, x_t: Tensor, t: Tensor, condition: Tensor,
                   operator: ObservationOperator) -> Tensor:
    alpha, sigma = denoiser.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
    scale = (sigma**2 / alpha).double()
    scale = scale.flatten(1)[:, :1] if scale.ndim else scale
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        x_hat = denoiser(x, t, condition)
        y_hat = operator(x_hat)
        deriv = operator.derivative(x_hat).detach().double()  # [B, M]
        b, m = y_hat.shape
        cols = []
        for j in range(m):
            e = torch.zeros_like(y_hat)
            e[:, j] = 1.0
            (g,) = torch.autograd.grad(y_hat, x, grad_outputs=e, retain_graph=j < m - 1)
            cols.append(scale * deriv * g.flatten(1)[:, operator.index].double())  # [B, M]
    cov = torch.stack(cols, dim=-1)  # [B, M, M], column j
    return 0.5 * (cov + cov.transpose(-1, -2))
