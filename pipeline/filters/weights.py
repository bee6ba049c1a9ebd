r"""Importance weights in float64.

``log w_i`` are normalised with a global log-sum-exp, ``w_i = exp(log w_i - LSE(log w))``;
the effective sample size is ``ESS = 1 / sum_i w_i^2``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalise(log_w: Tensor) -> Tensor:
    """Normalised log-weights: ``log_w - logsumexp(log_w)``, float64, ``[N]``."""
    log_w = log_w.double()
    if not torch.isfinite(log_w).any():
        raise FloatingPointError("every particle has zero weight (all log-weights are -inf or NaN)")
    return log_w - torch.logsumexp(log_w, 0)


def ess(log_w: Tensor) -> float:
    """``1 / sum w_i^2`` for normalised or unnormalised log-weights ``[N]``."""
    lw = normalise(log_w)
    return float(1.0 / torch.exp(2 * lw).sum())
