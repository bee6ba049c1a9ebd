r"""The ``Filter`` protocol: one assimilation cycle on a rank's shard of the ensemble.

``filter.cycle(ens, k, y)`` takes the ensemble after cycle ``k - 1`` (states ``[n, *S]``, or
``[n, K, *S]`` when the denoiser conditions on ``K`` past states) and the observation of cycle
``k``, and returns a :class:`CycleResult`: the weighted analysis ensemble of cycle ``k`` (what is
written), the weighted forecast mean (scored against the truth), the ensemble the next cycle
starts from (``carry``: the analysis itself unless a method resamples after the analysis is
written) and one typed :class:`Diagnostics` record. Every filter is one class with this single
method; which class runs is the configuration's business (:func:`pipeline.run.make_filter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from ..diffusion.observation import Observation
from .ensemble import Ensemble


@dataclass
class Diagnostics:
    """Per-cycle diagnostics, identical on every rank.

    ``ess``: ``1 / sum w_i^2`` of the analysis weights (``N`` for equal-weight methods; for a
    localised PF the mean over grid columns); ``alpha``: the tempering exponent of the weights
    (1 = untempered); ``resampled``; ``moved`` / ``moved_lower_bound``: particles moved between
    ranks by resampling and the least any plan needs; ``resample_seconds``.
    """

    ess: float
    alpha: float = 1.0
    resampled: bool = False
    moved: int = 0
    moved_lower_bound: int = 0
    resample_seconds: float = 0.0


@dataclass
class CycleResult:
    analysis: Ensemble  # the weighted analysis of cycle k: [n, *S] (or [n, K, *S])
    forecast_mean: Tensor  # [*S], the weighted mean of the forecast (prior) of cycle k
    diagnostics: Diagnostics
    carry: Ensemble | None = field(default=None)  # what cycle k + 1 starts from, when not ``analysis``

    @property
    def next(self) -> Ensemble:
        return self.analysis if self.carry is None else self.carry


class Filter(Protocol):
    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        """Assimilate ``observation`` (cycle ``cycle``) into ``ens`` (this rank's shard)."""
        ...
