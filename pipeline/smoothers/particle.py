r"""The reference smoother of the twins: a large bootstrap particle filter and backward simulation.

Forward (bootstrap PF, N particles): ``x_0^i ~ p_0`` (given draws), then for ``l = 1..L``:
resample by ``w_{l-1}`` (systematic), propagate ``x_l^i = m(x_{l-1}^i) + N(0, q I)``, weigh
``log w_l^i = log N(y_l | H(x_l^i), r I)`` over the observed entries (NaN = not observed). The
filter's mean is ``sum_i w_l^i x_l^i``.

Backward simulation (FFBSi; Godsill, Doucet & West 2004), ``M`` trajectories: ``x_L ~ w_L``, then
for ``l = L-1..1``: ``x_l = x_l^i`` with probability ``∝ w_l^i N(x_{l+1}; m(x_l^i), q I)``. The
trajectories are draws of ``p(x_{1:L} | y_{1:L})`` as N grows; it needs ``q > 0`` (a density of the
transition). Shapes: ``y`` ``[L, D]``, ``x0`` ``[N, D]``; particles ``[L, N, D]``, log-weights
``[L, N]``; trajectories ``[M, L, D]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..diffusion.observation import apply_fn
from ..errors import DiffdaError


def systematic(w: Tensor, g: torch.Generator) -> Tensor:
    """Indices ``[N]`` of a systematic resampling of the normalised weights ``w`` ``[N]``."""
    n = w.shape[0]
    u = (torch.rand((), generator=g, dtype=w.dtype) + torch.arange(n, dtype=w.dtype)) / n
    return torch.searchsorted(torch.cumsum(w, 0), u).clamp(max=n - 1)


def bootstrap_filter(m: Callable[[Tensor], Tensor], y: Tensor, r: float, operator: str, q: float, x0: Tensor,
                     g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Particles ``[L, N, D]`` and normalised log-weights ``[L, N]`` after each observation time."""
    length, (n, dim) = y.shape[0], x0.shape
    xs, logws = torch.empty(length, n, dim, dtype=x0.dtype), torch.empty(length, n, dtype=x0.dtype)
    x, logw = x0, torch.full((n,), -torch.log(torch.tensor(float(n))).item(), dtype=x0.dtype)
    for i in range(length):
        x = x[systematic(logw.exp(), g)]
        x = m(x) + q**0.5 * torch.randn(x.shape, generator=g, dtype=x.dtype)
        seen = ~torch.isnan(y[i])
        logw = -0.5 * ((y[i, seen] - apply_fn(operator, x[:, seen])) ** 2).sum(-1) / r
        logw = logw - torch.logsumexp(logw, 0)
        xs[i], logws[i] = x, logw
    return xs, logws


def backward_simulation(m: Callable[[Tensor], Tensor], particles: Tensor, logw: Tensor, q: float, draws: int,
                        g: torch.Generator) -> Tensor:
    """``draws`` trajectories ``[M, L, D]`` of the smoothing distribution (FFBSi)."""
    if q <= 0:
        raise DiffdaError("backward simulation needs model noise q > 0 (the transition density)")
    length, n, dim = particles.shape
    out = torch.empty(draws, length, dim, dtype=particles.dtype)
    j = torch.multinomial(logw[-1].exp(), draws, replacement=True, generator=g)
    out[:, -1] = particles[-1, j]
    for i in range(length - 2, -1, -1):
        mx = m(particles[i])  # [N, D]
        logb = logw[i][None] - 0.5 * torch.cdist(out[:, i + 1], mx) ** 2 / q  # [M, N]
        j = torch.multinomial(torch.softmax(logb, -1), 1, generator=g)[:, 0]
        out[:, i] = particles[i, j]
    return out
