r"""A rank's shard of the weighted particle ensemble, and reductions over all ranks.

Each particle carries a canonical global id (``ids``, int64 ``[n]``), a state (``x`` ``[n, *S]``)
and a normalised log-weight (``log_w`` float64 ``[n]``, ``logsumexp`` over all ranks = 0).
Reductions: ``mean = sum_i w_i x_i``, ``var = sum_i w_i (x_i - mean)^2`` (all ranks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributed.comm import Comm


@dataclass
class Ensemble:
    ids: Tensor
    x: Tensor
    log_w: Tensor

    @property
    def n_local(self) -> int:
        return int(self.ids.numel())


def current(x: Tensor, history: int) -> Tensor:
    """The newest state of particles ``[n, *S]`` (``history = 1``) or ``[n, K, *S]`` (``K = history``)."""
    return x if history == 1 else x[:, -1]


def advance(x_prev: Tensor, x_next: Tensor, history: int) -> Tensor:
    """New particles: ``x_next`` ``[n, *S]``, or the history shifted by one state ``[n, K, *S]``."""
    return x_next if history == 1 else torch.cat((x_prev[:, 1:], x_next[:, None]), dim=1)


def gather_rows(comm: Comm, ids: Tensor, *rows: Tensor) -> list[Tensor]:
    """Every rank's ``rows`` ``[n_r, ...]`` (one tensor per argument) as ``[N, ...]`` on the CPU, in
    canonical id order (row ``i`` is particle ``i``), identical on every rank."""
    gid = [i.cpu() for i in comm.all_gather(ids.to(comm.device))]
    n = sum(len(i) for i in gid)
    out = []
    for r in rows:
        full = r.new_zeros((n, *r.shape[1:]), device="cpu")
        for i, got in zip(gid, comm.all_gather(r.to(comm.device))):
            full[i] = got.cpu()
        out.append(full)
    return out


def global_log_weights(comm: Comm, ids: Tensor, log_w: Tensor) -> Tensor:
    """All log-weights ``[N]`` in canonical id order, identical on every rank (float64)."""
    return gather_rows(comm, ids, log_w.double())[0]


def global_normalise(comm: Comm, ids: Tensor, log_w: Tensor) -> Tensor:
    """This shard's ``log_w - LSE(all log_w)``; the LSE is taken over the canonical-order vector,
    so the result is bitwise the same whatever the number of ranks."""
    all_lw = global_log_weights(comm, ids, log_w)
    if not torch.isfinite(all_lw).any():
        raise FloatingPointError("every particle has zero weight (all log-weights are -inf or NaN)")
    return log_w.double() - torch.logsumexp(all_lw, 0)


def ess(comm: Comm, ids: Tensor, log_w: Tensor) -> float:
    """``1 / sum_i w_i^2`` over all ranks (canonical order: identical on every rank, for any P)."""
    all_lw = global_log_weights(comm, ids, log_w)
    return float(1.0 / torch.exp(2 * (all_lw - torch.logsumexp(all_lw, 0))).sum())


def weighted_moments(comm: Comm, x: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean and variance over all ranks: each ``[*S]`` (float64)."""
    w = torch.exp(log_w.double()).to(x.device).reshape((-1,) + (1,) * (x.ndim - 1))
    xd = x.double()
    mean = comm.all_reduce((w * xd).sum(0).to(comm.device)).to(x.device)
    var = comm.all_reduce((w * (xd - mean) ** 2).sum(0).to(comm.device)).to(x.device)
    return mean, var


def gather_ensemble(comm: Comm, ens: Ensemble) -> tuple[Tensor, Tensor]:
    """All states ``[N, *S]`` and log-weights ``[N]`` in canonical id order (every rank)."""
    xs, lw = gather_rows(comm, ens.ids, ens.x, ens.log_w.double())
    return xs, lw
