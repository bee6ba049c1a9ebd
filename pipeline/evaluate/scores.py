r"""Scores of a weighted ensemble against a truth.

- ``rmse(mean, truth) = sqrt(mean_d (mean_d - truth_d)^2)``
- ``spread(var) = sqrt(mean_d var_d)``
- weighted CRPS per component, averaged over components:
  ``CRPS = sum_i w_i |x_i - y| - 1/2 sum_ij w_i w_j |x_i - x_j|``, the pair term computed after
  sorting as ``sum_k w_k x_k (2 W_<k + w_k - 1)`` (``O(N log N)`` per component).
Shapes: members ``[N, *S]``, weights ``[N]`` (normalised), truth ``[*S]``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rmse(mean: Tensor, truth: Tensor) -> float:
    return float(torch.sqrt(((mean.double() - truth.double()) ** 2).mean()))


def spread(var: Tensor) -> float:
    return float(torch.sqrt(var.double().mean()))


def crps(members: Tensor, weights: Tensor, truth: Tensor) -> float:
    x = members.double().flatten(1)  # [N, D]
    w = weights.double().reshape(-1, 1).expand_as(x)
    y = truth.double().flatten()
    first = (w * (x - y).abs()).sum(0)
    xs, order = torch.sort(x, dim=0)
    ws = torch.gather(w, 0, order)
    below = torch.cumsum(ws, 0) - ws
    pair = (ws * xs * (2 * below + ws - 1)).sum(0)
    return float((first - pair).mean())
