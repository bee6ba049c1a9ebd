r"""Likelihood guidance: each method wraps a denoiser into the posterior denoiser

    d(x_t, t; c, y) = x_hat + sigma_t^2 / alpha_t * grad_{x_t} log p(y | x_t),

(Tweedie with the prior score plus the likelihood score), itself a ``Denoiser``.
``dps``: N(y | H(x_hat), Sigma_y); ``sda``: + sigma_t^2/alpha_t^2 gamma A A^T; ``mmps``: + A V A^T.
"""

from __future__ import annotations

from ..denoiser import Denoiser
from ..observation import Observation
from .dps import DPS
from .mmps import MMPS
from .sda import SDA

METHODS = {"dps": DPS, "sda": SDA, "mmps": MMPS}


def make_guidance(method: str, denoiser: Denoiser, observation: Observation, **options: float) -> Denoiser:
    """The posterior denoiser for ``method`` in ``dps``, ``sda``, ``mmps``."""
    try:
        cls = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown guidance {method!r}; choose one of {sorted(METHODS)}") from None
    return cls(denoiser, observation, **options)


__all__ = ["DPS", "MMPS", "SDA", "make_guidance"]
