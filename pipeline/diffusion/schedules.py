r"""Noise schedules: ``x_t = alpha_t x + sigma_t eps`` for ``t`` in ``[0, 1]``.

Every schedule is a callable ``schedule(t) -> (alpha_t, sigma_t)`` with ``t`` a tensor of any
shape; ``t = 0`` is (nearly) clean data and ``t = 1`` (nearly) pure noise.

- ``VPLinear``: ``log alpha_t = -beta_d t^2 / 4 - beta_min t / 2``, ``sigma_t = sqrt(1 - alpha_t^2)``.
- ``VPCosine``: ``alpha_t = cos(pi/2 (t+s)/(1+s)) / cos(pi/2 s/(1+s))``, clipped to ``alpha_min``.
- ``VE``: ``alpha_t = 1``, ``sigma_t = sigma_min (sigma_max / sigma_min)^t``.
- ``EDM``: ``alpha_t = 1``, ``sigma_t = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class Schedule(Protocol):
    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class VPLinear:
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        alpha = torch.exp(log_alpha)
        sigma = torch.sqrt(-torch.expm1(2 * log_alpha))
        return alpha, sigma


@dataclass(frozen=True)
class VPCosine:
    s: float = 0.008
    alpha_min: float = 1e-3

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        f0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        alpha = torch.cos(0.5 * math.pi * (t + self.s) / (1 + self.s)) / f0
        alpha = alpha.clamp(min=self.alpha_min, max=1.0)
        sigma = torch.sqrt((1 - alpha**2).clamp(min=0.0))
        return alpha, sigma


@dataclass(frozen=True)
class VE:
    sigma_min: float = 1e-3
    sigma_max: float = 100.0

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return torch.ones_like(sigma), sigma


@dataclass(frozen=True)
class EDM:
    sigma_min: float = 2e-3
    sigma_max: float = 80.0
    rho: float = 7.0

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        sigma = (a + t * (b - a)) ** self.rho
        return torch.ones_like(sigma), sigma


SCHEDULES: dict[str, type] = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "ve": VE,
    "edm": EDM,
}


def make_schedule(kind: str, **params: float) -> Schedule:
    """Build a schedule by name (``vp-linear``, ``vp-cosine``, ``ve``, ``edm``)."""
    try:
        cls = SCHEDULES[kind]
    except KeyError:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {sorted(SCHEDULES)}") from None
    return cls(**params)
