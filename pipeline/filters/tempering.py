r"""Adaptive tempering of particle weights (the seed authors' answer to weight collapse).

With ``M`` observations the log-likelihoods of a global particle filter spread like ``M`` and the
ESS collapses to 1 (Snyder et al. 2008). Tempering weighs with ``p(y | x_i)^alpha`` instead,

    log w_i(alpha) = log w_i^prior + alpha * log p(y | x_i),     0 < alpha <= 1,

which for a Gaussian likelihood whose covariance ``S`` is shared by the particles is
``N(y | H(m_i), S / alpha)`` up to a constant (the form of the seed's released GenCast filter).
``alpha`` is the largest value in ``(0, 1]`` whose ESS lies in the band ``[lo N, hi N]``: ``alpha = 1``
when the untempered ESS is already at least ``lo N``; otherwise bisection on ``log alpha`` (the
ESS grows as ``alpha`` shrinks, to the prior's ESS at ``alpha -> 0``). The proposal keeps the true
``Sigma_y``. Tempering is biased: the tempered weights target ``p(x | y)`` with the observation
information scaled by ``alpha``, i.e. observations are trusted less than they should be; when it
is inactive (``alpha = 1``) the filter is exactly the untempered one.

Shapes: ``log_prior`` and ``log_lik`` ``[N]`` float64, all particles in canonical order (the same
numbers on every rank, so every rank finds the same ``alpha``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ess_of(log_w: Tensor) -> float:
    """``1 / sum w_i^2`` of unnormalised log-weights ``[N]``."""
    lw = log_w - torch.logsumexp(log_w, 0)
    return float(1.0 / torch.exp(2 * lw).sum())


def adaptive_alpha(log_prior: Tensor, log_lik: Tensor, band: tuple[float, float],
                   iterations: int = 60, alpha_min: float = 1e-12) -> float:
    """The largest ``alpha`` in ``(0, 1]`` with ``ESS(alpha) / N`` in ``band = (lo, hi)`` (see the module)."""
    n = log_lik.numel()
    lo, hi = band[0] * n, band[1] * n
    finite = torch.isfinite(log_lik)
    log_lik = torch.where(finite, log_lik, torch.full_like(log_lik, -math.inf))

    def ess(alpha: float) -> float:
        return ess_of(log_prior + alpha * log_lik)

    if ess(1.0) >= lo:
        return 1.0
    a, b = math.log(alpha_min), 0.0  # ESS(exp(a)) >= lo (or as close as the prior allows), ESS(exp(b)) < lo
    if ess(alpha_min) < lo:
        return alpha_min
    for _ in range(iterations):
        mid = 0.5 * (a + b)
        e = ess(math.exp(mid))
        if lo <= e <= hi:
            return math.exp(mid)
        if e > hi:
            a = mid
        else:
            b = mid
    return math.exp(a)
