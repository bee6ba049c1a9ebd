r"""Systematic resampling.

With ``N`` normalised weights ``w`` and one uniform ``u ~ U(0, 1)`` shared by all ranks, the
ancestor of offspring ``j`` is the smallest ``i`` with ``cumsum(w)_i > (j + u) / N``. Each
particle gets ``floor(N w_i)`` or ``ceil(N w_i)`` copies; ancestors come out sorted.
"""

from __future__ import annotations

import torch
from torch import Tensor


def systematic(weights: Tensor, u: float) -> Tensor:
    """Ancestor indices ``[N]`` (int64, sorted) for normalised ``weights`` ``[N]`` and ``u`` in [0, 1)."""
    n = weights.numel()
    cdf = torch.cumsum(weights.double(), 0)
    cdf[-1] = 1.0  # guard round-off: every point falls inside
    points = (torch.arange(n, dtype=torch.float64, device=weights.device) + u) / n
    return torch.searchsorted(cdf, points, right=True).clamp(max=n - 1)
