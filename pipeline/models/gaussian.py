r"""The exact denoiser of a Gaussian transition ``x' = m(x) + xi``, ``xi ~ N(0, q I)``.

With ``x_t = alpha_t x' + sigma_t eps`` and condition ``x``:

    d(x_t, t; x) = E[x' | x_t, x] = m + alpha_t q / (alpha_t^2 q + sigma_t^2) (x_t - alpha_t m),

and the Tweedie covariance ``V[x' | x_t, x] = q sigma_t^2 / (alpha_t^2 q + sigma_t^2) I``.
It is an ``ExactTransition``: ``x' = m(x) + sqrt(q) z`` is drawn in one step when no guidance is needed.
``q`` may be a scalar or a ``[D]`` vector (diagonal ``Q``); ``q = 0`` gives ``d = m``.
Shapes: ``x_t`` ``[B, D]``, ``t`` scalar or ``[B]``, ``condition`` ``[B, D]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule


class GaussianDenoiser:
    def __init__(self, schedule: Schedule, dynamics: Callable[[Tensor], Tensor], q: float | Tensor):
        self.schedule = schedule
        self.dynamics = dynamics
        self.q = torch.as_tensor(q, dtype=torch.float64)
        self.noiseless = bool((self.q == 0).all())  # q = 0: x' = m(x), no draw needed

    def mean(self, condition: Tensor) -> Tensor:
        """``m(x)``: ``[B, D]``."""
        return self.dynamics(condition)

    def sample_transition(self, condition: Tensor, z: Tensor) -> Tensor:
        """``m(x) + sqrt(q) z``: an exact draw of ``x' | x``, ``[B, D]``."""
        q = self.q.to(device=z.device, dtype=z.dtype)
        return self.dynamics(condition) + torch.sqrt(q) * z

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
        with torch.set_grad_enabled(torch.is_grad_enabled() and condition.requires_grad):  # m depends on x only
            m = self.dynamics(condition)
        q = self.q.to(device=x_t.device, dtype=x_t.dtype)
        return m + alpha * q / (alpha**2 * q + sigma**2) * (x_t - alpha * m)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Diagonal of ``V[x' | x_t, x]``: ``[B, D]``."""
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
        q = self.q.to(device=x_t.device, dtype=x_t.dtype)
        return (q * sigma**2 / (alpha**2 * q + sigma**2)).expand_as(x_t)
