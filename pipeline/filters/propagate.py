r"""Particle propagation by (guided) reverse diffusion, in micro-batches, with per-particle noise.

- ``predict_mean``: ``m_i = d(sigma_1 eps_i, t=1; x_i)``, one denoiser call per particle, an
  estimate of ``E[x^{k+1} | x^k_i]``.
- ``propagate``: ``x^{k+1}_i ~ p(x^{k+1} | x^k_i[, y])`` by the sampler, the denoiser wrapped in
  likelihood guidance when an observation is given. Without an observation, a denoiser that is an
  :class:`~pipeline.diffusion.denoiser.ExactTransition` (the exact Gaussian denoiser of the twins) is
  sampled in one exact draw ``x^{k+1}_i = sample_transition(x^k_i, z_i)`` instead (``exact``), one
  batched call per micro-batch (``z = 0``, nothing drawn, for a ``noiseless`` transition).

All randomness comes from streams keyed by (seed, cycle, particle id, purpose) (:mod:`pipeline.rng`),
so results do not depend on micro-batch size or rank count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser, ExactTransition
from ..diffusion.guidance import make_guidance
from ..diffusion.observation import Observation
from ..diffusion.sampler import Sampler
from ..rng import ParticleNoise


@dataclass
class Timer:
    """Counts calls and wall time (synchronising CUDA so the time is the device's)."""

    seconds: float = 0.0
    calls: int = 0
    items: int = 0


class TimedDenoiser:
    """A denoiser proxy that records time, batched calls and particle evaluations."""

    def __init__(self, inner: Denoiser, timer: Timer):
        self.inner, self.timer = inner, timer
        self.schedule = inner.schedule

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _timed(self, fn, batch: Tensor, *args: Tensor) -> Tensor:
        """``fn(*args)`` timed as one call over the ``len(batch)`` particles."""
        sync = batch.is_cuda
        if sync:
            torch.cuda.synchronize(batch.device)
        start = time.perf_counter()
        out = fn(*args)
        if sync:
            torch.cuda.synchronize(batch.device)
        self.timer.seconds += time.perf_counter() - start
        self.timer.calls += 1
        self.timer.items += int(batch.shape[0])
        return out

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        return self._timed(self.inner, x_t, x_t, t, condition)

    def sample_transition(self, condition: Tensor, z: Tensor) -> Tensor:
        """The inner denoiser's exact draw, timed as one call."""
        return self._timed(self.inner.sample_transition, z, condition, z)


@dataclass
class Propagator:
    denoiser: Denoiser
    steps: int
    eta: float
    corrections: int
    delta: float
    t_min: float
    grid: str
    guidance: str
    guidance_options: dict
    micro_batch: int
    seed: int
    exact: bool = True  # unguided: one exact draw when the denoiser is an ExactTransition
    timer: Timer = field(default_factory=Timer)

    def __post_init__(self) -> None:
        self.timed = TimedDenoiser(self.denoiser, self.timer)

    def batches(self, n: int):
        """Row slices of at most ``micro_batch`` particles (all ``n`` when ``micro_batch = 0``)."""
        size = self.micro_batch if self.micro_batch > 0 else n
        for start in range(0, n, max(size, 1)):
            yield slice(start, min(n, start + size))

    def predict_mean(self, x_prev: Tensor, ids: Tensor, cycle: int, state_shape: tuple[int, ...]) -> Tensor:
        """``d(sigma_1 eps, 1; x^k)`` per particle: ``[n, *S]``."""
        noise = ParticleNoise(self.seed, cycle, ids, "predict", x_prev.device, x_prev.dtype)
        one = torch.ones((), dtype=x_prev.dtype, device=x_prev.device)
        _, sigma_1 = self.denoiser.schedule(one)
        out = []
        with torch.no_grad():
            for rows in self.batches(len(ids)):
                x_t = sigma_1 * noise.normal(rows, state_shape)
                out.append(self.timed(x_t, one, x_prev[rows]))
        return torch.cat(out) if out else x_prev.new_zeros((0, *state_shape))

    def propagate(self, x_prev: Tensor, ids: Tensor, cycle: int, state_shape: tuple[int, ...],
                  observation: Observation | None) -> Tensor:
        """Samples ``x^{k+1}_i`` for each particle: ``[n, *S]``."""
        noise = ParticleNoise(self.seed, cycle, ids, "propagate", x_prev.device, x_prev.dtype)
        if observation is None and self.exact and isinstance(self.denoiser, ExactTransition):
            z = (lambda rows: x_prev.new_zeros((rows.stop - rows.start, *state_shape))) if self.denoiser.noiseless \
                else (lambda rows: noise.normal(rows, state_shape))
            with torch.no_grad():
                out = [self.timed.sample_transition(x_prev[rows], z(rows)) for rows in self.batches(len(ids))]
            return torch.cat(out) if out else x_prev.new_zeros((0, *state_shape))
        if observation is None:
            denoiser = self.timed
        else:
            denoiser = make_guidance(self.guidance, self.timed, observation, **self.guidance_options)
        sampler = Sampler(denoiser, steps=self.steps, eta=self.eta, corrections=self.corrections,
                          delta=self.delta, t_min=self.t_min, grid=self.grid)
        out = []
        for rows in self.batches(len(ids)):
            draw = lambda rows=rows: noise.normal(rows, state_shape)  # noqa: E731
            with torch.no_grad():
                out.append(sampler.sample(x_prev[rows], draw, state_shape).detach())
        return torch.cat(out) if out else x_prev.new_zeros((0, *state_shape))
