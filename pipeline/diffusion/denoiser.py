r"""The denoiser protocol.

A denoiser returns the posterior mean of clean data given a noisy state and a condition,

    d(x_t, t; c) = E[x | x_t, c],   x_t = alpha_t x + sigma_t eps,

and owns the schedule it was built for. Its score follows from Tweedie's formula,
``grad log p(x_t | c) = (alpha_t d - x_t) / sigma_t^2``.

Shapes: ``x_t`` is ``[B, *S]`` (a batch of particles of state shape ``S``), ``t`` a scalar or
``[B]`` tensor, ``condition`` ``[B, *C]`` (e.g. the previous state ``[B, *S]``, or several
past states ``[B, K, *S]``). The result has the shape of ``x_t``. Denoisers must be
differentiable in ``x_t`` (guidance takes vector-Jacobian products through them).

A denoiser may also offer ``variance(x_t, t) -> Tensor``: a diagonal model of Tweedie's
covariance ``V[x | x_t, c]`` (shape broadcastable to ``x_t``). MMPS with
``covariance="diagonal"`` uses it instead of the Jacobian (no vector-Jacobian products); the exact
Gaussian denoiser's is exact, a neural denoiser's is the variance of the Gaussian prior its
preconditioning is built around.

A denoiser whose conditional law is known in closed form may also be an :class:`ExactTransition`:
``sample_transition(condition, z)`` returns an exact draw of ``x ~ p(x | c)`` from standard normals
``z`` ``[B, *S]``. Unguided propagation (forecasts, the bootstrap PF, the ETKF) then costs one draw
instead of a reverse diffusion (``sampler.exact``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .schedules import Schedule


class Denoiser(Protocol):
    schedule: Schedule

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor: ...


@runtime_checkable
class ExactTransition(Protocol):
    noiseless: bool  # the transition is deterministic: ``z`` is ignored (zeros are passed, nothing is drawn)

    def sample_transition(self, condition: Tensor, z: Tensor) -> Tensor:
        """An exact draw of ``x ~ p(x | condition)`` from standard normals ``z`` ``[B, *S]``: ``[B, *S]``."""
        ...


def score(denoiser: Denoiser, x_t: Tensor, t: Tensor | float, condition: Tensor) -> Tensor:
    """``(alpha_t d(x_t, t; c) - x_t) / sigma_t^2``, shape of ``x_t``."""
    floating = isinstance(t, Tensor) and t.is_floating_point()
    t = torch.as_tensor(t, dtype=t.dtype if floating else x_t.dtype, device=x_t.device)
    alpha, sigma = denoiser.schedule(_expand(t, x_t))
    return (alpha * denoiser(x_t, t, condition) - x_t) / sigma**2


def _expand(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a scalar or ``[B]`` time to broadcast against ``x`` of shape ``[B, *S]``."""
    if t.ndim == 0:
        return t
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


expand_time = _expand
