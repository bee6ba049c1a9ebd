r"""The hybrid particle–Kalman transform of ``pf-local`` (``filter.hybrid``): the local NETF on a share
``1 - gamma_p`` of the likelihood, then a local ETKF on the rest (Nerger 2022, the LKNETF's "HNK"
order; the split of the likelihood is the EnKPF's, Frei & Künsch 2013).

Per column ``p``, with the untempered local log-weights ``l_pi`` and their ESS ``N^eff_p``:

    gamma_p = h (1 - N^eff_p / N)          (Nerger's gamma_lin; h = filter.hybrid in [0, 1])

1. particle step: the NETF transform ``T1_p`` of the tempered weights ``log w_pi ∝ (1 - gamma_p) l_pi``
   (:func:`.pf_local.netf_transform`): the intermediate members ``x'_j = sum_a x_a T1_p[a, j]`` have the
   tempered posterior's weighted mean and covariance;
2. Kalman step, with ``R / gamma_p`` (what is left of the likelihood, ``p(y|x)^gamma``): the observed
   intermediate members ``h'_j = sum_a h_a T1_p[a, j]`` (``h_a`` the observed predictive means; exact
   for a linear observation of a linear map, first order otherwise), anomalies ``Y = h' - hbar'`` and
   innovation ``d = y - hbar'`` give the ETKF transform ``T2_p = wbar_p 1^T + W_p``
   (:func:`.etkf.ensemble_transforms` with the localised ``R^-1`` times ``gamma_p``), applied to the
   anomalies of the intermediate members:

       x~_k = xbar' + sum_j (x'_j - xbar') T2_p[j, k],   i.e.   T_p = T1_p (1 1^T / N + A T2_p),

   ``A = I - 1 1^T / N``.

``gamma_p = 0`` (``h = 0``, or weights that do not discriminate, ``N^eff = N``) is the NETF alone;
weights that collapse hand almost all of the likelihood to the Kalman step. Where the likelihood is
Gaussian the two steps compose to the exact posterior's first two moments (``p(y|x)^(1-gamma)
p(y|x)^gamma = p(y|x)``), so ``gamma`` only decides which part of the update is non-Gaussian (the
particle step) and which can move the mean outside the members' convex hull (the Kalman step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .etkf import ensemble_transforms
from .localisation import LocalObs
from .tempering import batched_ess


def hybrid_gamma(log_lik: Tensor, log_prior: Tensor, h: float) -> Tensor:
    """``gamma_p = h (1 - N^eff_p / N)`` ``[P]`` from the local log-likelihoods ``[P, N]`` and the prior
    log-weights ``[N]`` (normalised)."""
    lw = log_prior[None, :] + log_lik
    lw = lw - torch.logsumexp(lw, 1, keepdim=True)
    n = log_lik.shape[1]
    return h * (1.0 - batched_ess(lw) / n)


def kalman_after(T1: Tensor, hx: Tensor, y: Tensor, r_inv: Tensor, local: LocalObs, gamma: Tensor) -> Tensor:
    """The hybrid transforms ``T_p = T1_p (1 1^T / N + A T2_p)`` ``[P, N, N]`` (float64) from the particle
    step's ``T1`` ``[P, N, N]``, the observed members ``hx`` ``[N, M]``, the observations ``y`` ``[M]``,
    ``R^-1`` ``[M]``, the columns' tapered observations ``local`` (``P`` rows) and ``gamma`` ``[P]``."""
    p, n, _ = T1.shape
    if local.index.shape[1] == 0:
        return T1
    hl = hx.double().T[local.index]  # [P, L, N]
    hp = torch.einsum("pla,paj->pjl", hl, T1)  # [P, N, L]: the intermediate members, observed
    hbar = hp.mean(1)
    Y = hp - hbar[:, None, :]
    d = y.double()[local.index] - hbar
    w = gamma[:, None] * local.coef * r_inv.double()[local.index]  # localised (R / gamma)^-1
    wbar, W = ensemble_transforms(Y, w, d)
    T2 = wbar[:, :, None] + W
    C = T2 - T2.mean(1, keepdim=True) + 1.0 / n
    return T1 @ C


__all__ = ["hybrid_gamma", "kalman_after"]
