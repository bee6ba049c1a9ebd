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


def batched_ess(log_w: Tensor) -> Tensor:
    """``1 / sum_i w_pi^2`` per row of unnormalised log-weights ``[P, N]``: ``[P]``."""
    lw = log_w - torch.logsumexp(log_w, 1, keepdim=True)
    return 1.0 / torch.exp(2 * lw).sum(1)


def ess_of(log_w: Tensor) -> float:
    """``1 / sum w_i^2`` of unnormalised log-weights ``[N]``."""
    return float(batched_ess(log_w[None])[0])


def adaptive_alpha_columns(log_prior: Tensor, log_lik: Tensor, band: tuple[float, float],
                           iterations: int = 60, alpha_min: float = 1e-12) -> Tensor:
    """The rule of the module per row (column) at once: ``log_prior`` ``[N]``, ``log_lik`` ``[P, N]``
    -> ``alpha`` ``[P]`` (1 where the untempered ESS is at least ``lo N``; bisection on ``log alpha``
    elsewhere)."""
    n = log_lik.shape[1]
    lo, hi = band[0] * n, band[1] * n
    log_lik = torch.where(torch.isfinite(log_lik), log_lik, torch.full_like(log_lik, -math.inf))

    def ess(alpha: Tensor) -> Tensor:
        return batched_ess(log_prior[None, :] + alpha[:, None] * log_lik)

    p = log_lik.shape[0]
    one = torch.ones(p, dtype=torch.float64)
    done = ess(one) >= lo
    result = one.clone()
    floor = ess(torch.full((p,), alpha_min, dtype=torch.float64)) < lo
    result[floor & ~done] = alpha_min
    active = ~done & ~floor
    a = torch.full((p,), math.log(alpha_min), dtype=torch.float64)  # ESS(exp(a)) >= lo
    b = torch.zeros(p, dtype=torch.float64)  # ESS(exp(b)) < lo
    for _ in range(iterations):
        if not bool(active.any()):
            break
        mid = 0.5 * (a + b)
        e = ess(torch.exp(mid))
        inside = active & (e >= lo) & (e <= hi)
        result[inside] = torch.exp(mid[inside])
        active = active & ~inside
        a = torch.where(active & (e > hi), mid, a)
        b = torch.where(active & (e < lo), mid, b)
    result[active] = torch.exp(a[active])
    return result


def adaptive_alpha(log_prior: Tensor, log_lik: Tensor, band: tuple[float, float],
                   iterations: int = 60, alpha_min: float = 1e-12) -> float:
    """The largest ``alpha`` in ``(0, 1]`` with ``ESS(alpha) / N`` in ``band = (lo, hi)`` (see the
    module): :func:`adaptive_alpha_columns` of the one row ``log_lik`` ``[N]``."""
    return float(adaptive_alpha_columns(log_prior, log_lik[None], band, iterations, alpha_min)[0])
