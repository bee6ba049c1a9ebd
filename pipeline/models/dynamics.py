r"""Twin-experiment dynamics ``m(x)``, batched: ``x`` is ``[B, D]``, the result ``[B, D]``.

- ``Linear``: ``m(x) = a S x``, ``S`` circulant with stencil ``(c, 1 - 2c, c)``.
- ``Lorenz96``: ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F``; ``steps`` RK4 steps of ``dt``.
- ``Lorenz63``: ``(s (y - x), x (r - z) - y, x y - b z)``; ``steps`` RK4 steps of ``dt``.

The Lorenz integrations of a float64 CPU tensor outside autograd run on its NumPy view: the same
IEEE operations in the same order (the result is bitwise the same), at a fraction of torch's
per-operation cost on twin-sized batches (hundreds of small operations per cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def rk4(f: Callable[[Tensor], Tensor], x: Tensor, dt: float, steps: int) -> Tensor:
    for _ in range(steps):
        k1 = f(x)
        k2 = f(x + 0.5 * dt * k1)
        k3 = f(x + 0.5 * dt * k2)
        k4 = f(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def integrate(f: Callable[[Tensor], Tensor], x: Tensor, dt: float, steps: int) -> Tensor:
    """:func:`rk4` of ``x``, on its NumPy view when ``x`` is a float64 CPU tensor outside autograd."""
    if x.device.type == "cpu" and x.dtype == torch.float64 and not (x.requires_grad or torch.is_grad_enabled()):
        return torch.from_numpy(rk4(f, x.numpy(), dt, steps))
    return rk4(f, x, dt, steps)


def _lib(x):
    """The array library of ``x``: NumPy for an ndarray, else torch (``roll``/``stack`` take the same positional args)."""
    return np if isinstance(x, np.ndarray) else torch


@dataclass(frozen=True)
class Linear:
    a: float = 0.95
    c: float = 0.25

    def matrix(self, dim: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """``a S``, ``[D, D]``."""
        s = torch.zeros(dim, dim, dtype=dtype)
        i = torch.arange(dim)
        s[i, i] = 1 - 2 * self.c
        s[i, (i + 1) % dim] += self.c
        s[i, (i - 1) % dim] += self.c
        return self.a * s

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * ((1 - 2 * self.c) * x + self.c * (torch.roll(x, 1, -1) + torch.roll(x, -1, -1)))


@dataclass(frozen=True)
class Lorenz96:
    F: float = 8.0
    dt: float = 0.05
    steps: int = 1

    def tendency(self, x: Tensor) -> Tensor:
        xp = _lib(x)
        return (xp.roll(x, -1, -1) - xp.roll(x, 2, -1)) * xp.roll(x, 1, -1) - x + self.F

    def __call__(self, x: Tensor) -> Tensor:
        return integrate(self.tendency, x, self.dt, self.steps)


@dataclass(frozen=True)
class Lorenz63:
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    dt: float = 0.01
    steps: int = 25

    def tendency(self, x: Tensor) -> Tensor:
        a, b, c = x[..., 0], x[..., 1], x[..., 2]
        return _lib(x).stack((self.sigma * (b - a), a * (self.rho - c) - b, a * b - self.beta * c), -1)

    def __call__(self, x: Tensor) -> Tensor:
        return integrate(self.tendency, x, self.dt, self.steps)
