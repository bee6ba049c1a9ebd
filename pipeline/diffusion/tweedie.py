r"""Tweedie's covariance in observation space, for the filter's ``inflated`` weights.

    cov = A V A^T,   V = V[x | x_t, c] = sigma_t^2 / alpha_t * J,   J = dx_hat/dx_t,   x_hat = d(x_t, t; c),

``A = dH/dx`` at ``x_hat``. The filter weighs particles by ``N(y | H(m), Sigma_y + A V A^T)`` at ``t = 1``.
With ``G = dH(x_hat)/dx_t = A J``, column ``j`` is ``A V A^T e_j = sigma_t^2/alpha_t A (G^T e_j)`` (``J``
symmetric for a true posterior-mean denoiser), and ``G^T e_j`` is one vector-Jacobian product (VJP)
through the denoiser, batched over particles. Cost: one forward pass and ``M`` VJPs, taken
``chunk`` cotangents at a time (``torch.autograd.grad(..., is_grads_batched=True)``, a vmap over the
backward pass; memory grows with ``chunk``); ``chunk = 1`` is a plain loop, for denoisers whose
backward cannot be vmapped. The result is symmetrised, ``(cov + cov^T) / 2``, and with ``psd=True``
projected onto the positive semi-definite cone (eigenvalues clipped at 0; ``O(M^3)`` per particle,
the order of the Cholesky factorisation its user does anyway): a learned denoiser's Jacobian need
not be a covariance, and at ``t = 1`` its errors are amplified by ``1/alpha_1`` (~1e3 for VP), enough
to make ``Sigma_y + A V A^T`` indefinite. For an exact denoiser the projection changes nothing.
Shapes: ``x_t`` ``[B, *S]``, ``t`` scalar or ``[B]``, ``condition`` ``[B, *C]``; result ``[B, M, M]`` float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser
from .guidance.common import alpha_sigma, denoise_with_graph, per_particle
from .observation import ObservationOperator


def obs_covariance(denoiser: Denoiser, x_t: Tensor, t: Tensor | float, condition: Tensor,
                   operator: ObservationOperator, chunk: int = 1, psd: bool = True) -> Tensor:
    """``A V A^T`` at ``x_hat = d(x_t, t; c)``: ``[B, M, M]`` float64 (see the module docstring)."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1; got {chunk}")
    operator = operator.to(x_t.device)
    alpha_t, sigma_t = alpha_sigma(denoiser, t, x_t)
    scale = per_particle(sigma_t**2 / alpha_t).double()  # 0-d or [B, 1]
    with torch.enable_grad():
        x, x_hat = denoise_with_graph(denoiser, x_t, t, condition)
        y_hat = operator(x_hat)  # [B, M]
        deriv = operator.derivative(x_hat).detach().double()  # [B, M]
        b, m = y_hat.shape
        if m == 0:
            return torch.zeros(b, 0, 0, dtype=torch.float64, device=x_t.device)
        eye = torch.eye(m, dtype=y_hat.dtype, device=y_hat.device)
        cols = []
        for start in range(0, m, chunk):
            stop = min(m, start + chunk)
            last = stop == m
            if chunk == 1:
                e = eye[start].expand(b, m)
                (g,) = torch.autograd.grad(y_hat, x, grad_outputs=e, retain_graph=not last)
                g = g[None]  # [1, B, *S]
            else:
                e = eye[start:stop, None, :].expand(stop - start, b, m)  # [k, B, M] cotangents
                (g,) = torch.autograd.grad(y_hat, x, grad_outputs=e, retain_graph=not last,
                                           is_grads_batched=True)  # [k, B, *S]
            cols.append(g.flatten(2)[:, :, operator.index].double())  # (G^T e_j)[index]: [k, B, M]
    gt = torch.cat(cols).permute(1, 2, 0)  # [B, M (row i), M (column j)]
    cov = scale[..., None] * deriv[:, :, None] * gt
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    if psd:
        evals, evecs = torch.linalg.eigh(cov)
        cov = (evecs * evals.clamp(min=0.0)[..., None, :]) @ evecs.transpose(-1, -2)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
    return cov
