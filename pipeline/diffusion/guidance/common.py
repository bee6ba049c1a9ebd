r"""Shared pieces of the guidance wrappers.

Every wrapper turns a denoiser ``d`` into the posterior denoiser (Tweedie with the prior score plus
the likelihood score)

    d(x_t, t; c, y) = x_hat + sigma_t^2 / alpha_t * grad_{x_t} log p(y | x_t),   x_hat = d(x_t, t; c),

and differs only in its approximation of ``log p(y | x_t)``. The helpers here: the schedule at
``t`` shaped per particle, the graph from ``x_t`` to ``x_hat`` built with grad enabled locally (so the
wrappers work inside the caller's ``torch.no_grad``), and the observation moved to the state's
device once, and :class:`Guidance`, the base that holds the denoiser, its schedule and the observation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser, expand_time
from ..observation import Observation


def alpha_sigma(denoiser: Denoiser, t: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
    """``alpha_t, sigma_t`` broadcastable against ``like`` ``[B, *S]`` (0-d or ``[B, 1, ..., 1]``)."""
    dtype = t.dtype if isinstance(t, Tensor) and t.is_floating_point() else like.dtype
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32  # half-precision times are too coarse for the schedule
    t = torch.as_tensor(t, dtype=dtype, device=like.device)
    return denoiser.schedule(expand_time(t, like))


def per_particle(v: Tensor) -> Tensor:
    """A 0-d or ``[B, 1, ..., 1]`` schedule factor as 0-d or ``[B, 1]``, to broadcast against ``[B, M]``."""
    return v if v.ndim == 0 else v.flatten(1)[:, :1]


def denoise_with_graph(denoiser: Denoiser, x_t: Tensor, t: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, x_hat)``: a leaf copy ``x`` of ``x_t`` requiring grad, and ``x_hat = d(x, t; c)`` with its graph.

    Call it under ``torch.enable_grad()``. Raises inside ``torch.inference_mode`` (no graph can be
    built there); use ``torch.no_grad`` in callers instead.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("likelihood guidance needs autograd: call the sampler under torch.no_grad(), "
                           "not torch.inference_mode()")
    x = x_t.detach().requires_grad_(True)
    return x, denoiser(x, t, condition.detach())


class ObservationCache:
    """The observation on the device of the states it meets (moved once per device, then reused)."""

    def __init__(self, observation: Observation):
        self.observation = observation
        self._moved: dict[torch.device, Observation] = {observation.y.device: observation}

    def on(self, like: Tensor) -> Observation:
        obs = self._moved.get(like.device)
        if obs is None:
            obs = self._moved[like.device] = self.observation.to(like.device)
        return obs


class Guidance:
    """Base of the wrappers: the denoiser, its schedule (a wrapper is a ``Denoiser`` with the same
    one) and the observation, moved to the state's device once."""

    def __init__(self, denoiser: Denoiser, observation: Observation):
        self.denoiser, self.observation = denoiser, observation
        self.schedule = denoiser.schedule
        self._obs = ObservationCache(observation)
