r"""Likelihood guidance: each method wraps a denoiser into the posterior denoiser

    d(x_t, t; c, y) = E[x | x_t, c, y] = x_hat + sigma_t^2 / alpha_t * grad_{x_t} log p(y | x_t),

``x_hat = d(x_t, t; c)`` (Tweedie with the prior score plus the likelihood score), itself a
``Denoiser`` with the same schedule, so any sampler runs it unchanged. ``log p(y | x_t)`` is
approximated by ``N(y | H(x_hat), cov_y)`` with

- ``dps``:  ``cov_y = Sigma_y``                                  (option ``scale``),
- ``sda``:  ``cov_y = Sigma_y + sigma_t^2/alpha_t^2 gamma A A^T``   (option ``gamma``),
- ``mmps``: ``cov_y = Sigma_y + A V[x | x_t] A^T``                (option ``cg_iterations``),

``A`` the Jacobian of ``H`` at ``x_hat``, the gradient taken through ``x_hat`` only. The wrappers
enable grad locally (they work inside ``torch.no_grad``) and return detached tensors.
"""

from __future__ import annotations

import inspect

from ..denoiser import Denoiser
from ..observation import Observation
from .dps import DPS
from .mmps import MMPS, conjugate_gradient
from .sda import SDA

METHODS = {"dps": DPS, "sda": SDA, "mmps": MMPS}


def make_guidance(method: str, denoiser: Denoiser, observation: Observation, **options: float) -> Denoiser:
    """The posterior denoiser for ``method`` in ``dps``, ``sda``, ``mmps``; ``options`` go to its class.

    Raises ``ValueError`` for an unknown method or an option the method does not take.
    """
    try:
        cls = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown guidance {method!r}; choose one of {sorted(METHODS)}") from None
    allowed = set(inspect.signature(cls).parameters) - {"denoiser", "observation"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"guidance {method!r} takes options {sorted(allowed)}; got unknown {unknown}")
    return cls(denoiser, observation, **options)


__all__ = ["DPS", "MMPS", "SDA", "METHODS", "conjugate_gradient", "make_guidance"]
