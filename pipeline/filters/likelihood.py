r"""Gaussian log-likelihoods of the particle weights, in float64.

``log N(y | hx_i, Sigma_y + cov_i)`` with ``Sigma_y = diag(variance)`` and an optional per-particle
covariance ``cov_i``, dense ``[B, M, M]`` (Cholesky) or diagonal ``[B, M]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.observation import Observation


def gaussian_log_likelihood(observation: Observation, hx: Tensor, cov: Tensor | None = None) -> Tensor:
    """``log N(y | hx_i, Sigma_y [+ cov_i])`` ``[B]`` float64: ``hx`` ``[B, M]``, ``cov`` ``[B, M, M]`` or
    its diagonal ``[B, M]``."""
    if cov is None:
        return observation.log_likelihood(hx)
    r = observation.y.double() - hx.double()  # [B, M]
    if cov.ndim == 2:
        var = observation.variance.double() + cov.double()
        return -0.5 * (r**2 / var + torch.log(2 * torch.pi * var)).sum(-1)
    s = cov.double() + torch.diag_embed(observation.variance.double()).expand_as(cov)
    chol = torch.linalg.cholesky(s)
    z = torch.linalg.solve_triangular(chol, r[..., None], upper=False)[..., 0]
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z**2).sum(-1) + logdet + r.shape[-1] * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64)))
