r"""Additive model-error inflation of the carried ensemble (the imperfect-model case).

After each cycle's analysis is written, the newest state of every particle ``j`` of the ensemble the
next cycle starts from is perturbed (Houtekamer & Mitchell 2005; Whitaker et al. 2008):

    x_j <- x_j + a (delta_j - 1/N sum_i delta_i),   delta_j = E^T z_j / sqrt(S - 1),

with ``E`` ``[S, D]`` the anomalies ``e_s - mean_s e_s`` of ``S`` samples of the model's one-step
error (:mod:`pipeline.models.model_error`: truth minus the emulator's mean forecast from the true
states, on a trajectory the filter is not scored on) and ``z_j ~ N(0, I_S)`` from particle ``j``'s
own stream ``(seed, cycle, id, "additive")``. So ``Cov(delta_j) = E^T E / (S - 1)``, the sample
covariance of the model error, with its cross-variable structure (a temperature error comes with the
geopotential and wind errors the emulator makes with it), which is what lets temperature observations
correct the unobserved fields through the ensemble. Recentring (the ``1/N sum_i delta_i`` term,
summed in canonical particle order: identical for any rank count) leaves the ensemble mean unchanged:
only the spread grows. ``a = filter.additive_inflation``; the analysis as written is not perturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributed.comm import Comm
from ..rng import ParticleNoise
from .ensemble import Ensemble, gather_rows


@dataclass
class AdditiveInflation:
    comm: Comm
    anomalies: Tensor  # E [S, D], float64 (D = prod of the state shape)
    scale: float  # a
    seed: int
    history: int = 1

    def __call__(self, ens: Ensemble, cycle: int) -> Ensemble:
        """``ens`` with the newest state of each particle perturbed as above (``x`` ``[n, (K,) *S]``)."""
        s, d = self.anomalies.shape
        x = ens.x
        noise = ParticleNoise(self.seed, cycle, ens.ids, "additive", "cpu", torch.float64)
        z = noise.normal(None, (s,))  # [n, S]
        delta = z @ self.anomalies / (s - 1) ** 0.5  # [n, D]
        all_delta = gather_rows(self.comm, ens.ids, delta)[0]  # [N, D], canonical order
        delta = self.scale * (delta - all_delta.mean(0))
        newest = x if self.history == 1 else x[:, -1]
        perturbed = newest + delta.reshape(newest.shape).to(x.device, x.dtype)
        if self.history == 1:
            return Ensemble(ens.ids, perturbed, ens.log_w)
        out = x.clone()
        out[:, -1] = perturbed
        return Ensemble(ens.ids, out, ens.log_w)
