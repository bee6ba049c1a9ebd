r"""Global systematic resampling of a sharded ensemble, with optional jitter of duplicates.

Every rank gathers the ``N`` log-weights (float64, canonical id order), draws the same ancestors
``a_j`` with one shared uniform, and the particles move only where a rank's count must change
(:mod:`pipeline.distributed.migration`). Offspring ``j`` gets canonical id ``j``.

Jitter (regularisation): duplicated offspring (``j > 0`` with ``a_j = a_{j-1}``) get
``h sum_i sqrt(w_i) (x_i - xbar) z_ij``, ``z_ij ~ N(0, 1)``, which is ``N(0, h^2 C)`` with ``C`` the
weighted ensemble covariance before resampling and ``h = reg N^(-1/(d+4))`` (DAPPER's ``reg``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..distributed.comm import Comm
from ..rng import generator, shared_uniform
from .base import Diagnostics
from .ensemble import Ensemble, ess, global_log_weights, weighted_moments
from .resampling import systematic


@dataclass
class ResampleStats:
    """Particles moved between ranks, and the lower bound any plan needs (totals over calls)."""

    count: int = 0
    moved: int = 0
    lower_bound: int = 0


@dataclass
class Resampler:
    """Systematic resampling when ``ESS < threshold * N``, one shared uniform per cycle
    (``shared_uniform(seed, cycle)``), jitter ``regularization`` (0 = none)."""

    comm: Comm
    n_total: int
    threshold: float = 0.5
    regularization: float = 0.0
    seed: int = 0
    stats: ResampleStats = field(default_factory=ResampleStats)

    def maybe_resample(self, ens: Ensemble, cycle: int) -> tuple[Ensemble, Diagnostics]:
        """The (possibly) resampled shard and the cycle's diagnostics (ESS before resampling)."""
        e = ess(self.comm, ens.ids, ens.log_w)
        diag = Diagnostics(ess=e)
        if e < self.threshold * self.n_total:
            moved0, bound0 = self.stats.moved, self.stats.lower_bound
            start = time.perf_counter()
            ens = resample(self.comm, ens, shared_uniform(self.seed, cycle), self.n_total, self.regularization,
                           self.seed, cycle, self.stats)
            diag.resampled, diag.resample_seconds = True, time.perf_counter() - start
            diag.moved, diag.moved_lower_bound = self.stats.moved - moved0, self.stats.lower_bound - bound0
        return ens, diag


def resample(comm: Comm, ens: Ensemble, u: float, n_total: int, reg: float = 0.0,
             seed: int = 0, cycle: int = 0, stats: ResampleStats | None = None) -> Ensemble:
    """Resampled shard with uniform weights ``log(1/N)``."""
    from ..distributed.comm import shard_sizes
    from ..distributed.migration import lower_bound, migrate

    log_w_all = global_log_weights(comm, ens.ids, ens.log_w)
    ancestors = systematic(torch.exp(log_w_all), u)
    noise = _jitter(comm, ens, ancestors, n_total, reg, seed, cycle) if reg > 0 else None
    moved = migrate(comm, ens.ids, ens.x, ancestors)
    new_ids, new_x = moved.ids, moved.x
    if stats is not None:
        stats.count += 1
        stats.moved += moved.plan.moved
        stats.lower_bound += lower_bound(moved.plan.owner, shard_sizes(n_total, comm.size))
    if noise is not None:
        dup_ids, dup_noise = noise
        pos = {int(j): r for r, j in enumerate(new_ids.tolist())}
        rows = [pos[int(j)] for j in dup_ids.tolist() if int(j) in pos]
        sel = [k for k, j in enumerate(dup_ids.tolist()) if int(j) in pos]
        if rows:
            new_x = new_x.clone()
            new_x[rows] += dup_noise[sel].to(new_x.device, new_x.dtype)
    log_w = torch.full((len(new_ids),), -torch.log(torch.tensor(float(n_total), dtype=torch.float64)).item(),
                       dtype=torch.float64)
    return Ensemble(new_ids, new_x, log_w)


def _jitter(comm: Comm, ens: Ensemble, ancestors: Tensor, n_total: int, reg: float,
            seed: int, cycle: int) -> tuple[Tensor, Tensor] | None:
    dup = torch.nonzero(ancestors[1:] == ancestors[:-1]).flatten() + 1
    if dup.numel() == 0:
        return None
    d = int(torch.tensor(ens.x.shape[1:]).prod())  # state dimension (the shape is known on every rank)
    h = reg * n_total ** (-1.0 / (d + 4))
    mean, _ = weighted_moments(comm, ens.x, ens.log_w)
    anomalies = torch.sqrt(torch.exp(ens.log_w.double())).to(ens.x.device).reshape((-1,) + (1,) * (ens.x.ndim - 1)) * (ens.x.double() - mean)
    z = torch.stack([torch.randn(n_total, generator=generator(seed, cycle, int(j), "jitter"), dtype=torch.float64)
                     for j in dup.tolist()])  # [n_dup, N], column i = particle id i
    z_local = z[:, ens.ids.cpu()].to(ens.x.device)  # [n_dup, n_local]
    partial = torch.einsum("ji,i...->j...", z_local, anomalies)
    return dup, h * comm.all_reduce(partial.to(comm.device)).cpu()
