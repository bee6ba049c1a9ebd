r"""Members sharded by rank <-> columns sharded by rank: the two all-to-alls of a local analysis.

Members arrive sharded (rank ``r`` holds ``n_r`` members, ``x`` ``[n_r, F, P]``: ``F`` fields over
``P`` columns, :mod:`.localisation`). Columns are split into contiguous blocks, rank ``q`` owning
``shard_sizes(P, R)[q]`` of them. :func:`to_columns` gives every rank all ``N`` members on its
columns, ``[N, F, P_q]`` in canonical id order; :func:`from_columns` returns the analysis members
to their owners. Each is one ``Comm.exchange`` (an ``all_to_all_single``): rank ``r`` sends rank
``q`` the ``n_r x F x P_q`` block. Memory per rank: ``N F P / R`` (state x N / P), never the whole
ensemble.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..distributed.comm import Comm, shard_sizes, shard_start


def column_block(n_columns: int, size: int, rank: int) -> slice:
    """The columns rank ``rank`` analyses: a contiguous block."""
    start = shard_start(n_columns, size, rank)
    return slice(start, start + shard_sizes(n_columns, size)[rank])


def all_ids(comm: Comm, ids: Tensor) -> list[Tensor]:
    """Every rank's member ids, in rank order."""
    return [t.cpu() for t in comm.all_gather(ids.to(comm.device))]


def to_columns(comm: Comm, ids: Tensor, x: Tensor, n_total: int, rank_ids: list[Tensor]) -> Tensor:
    """All members on this rank's columns: ``[N, F, P_q]`` (canonical id order) from ``x`` ``[n_r, F, P]``."""
    n_local, f, p = x.shape
    blocks = [column_block(p, comm.size, q) for q in range(comm.size)]
    sends = {q: x[:, :, b].reshape(-1).to(comm.device) for q, b in enumerate(blocks)
             if n_local and b.stop > b.start}
    got = comm.exchange(sends, (), x.dtype)
    mine = blocks[comm.rank]
    out = x.new_zeros((n_total, f, mine.stop - mine.start))
    for src, flat in got.items():
        src_ids = rank_ids[src]
        out[src_ids.to(x.device)] = flat.to(x.device).reshape(len(src_ids), f, mine.stop - mine.start)
    return out


def from_columns(comm: Comm, xc: Tensor, n_columns: int, rank_ids: list[Tensor]) -> Tensor:
    """This rank's members on all columns, ``[n_r, F, P]``, from every rank's ``xc`` ``[N, F, P_q]``."""
    f = xc.shape[1]
    sends = {q: xc[ids.to(xc.device)].reshape(-1).to(comm.device) for q, ids in enumerate(rank_ids)
             if len(ids) and xc.shape[2]}
    got = comm.exchange(sends, (), xc.dtype)
    mine = rank_ids[comm.rank]
    out = xc.new_zeros((len(mine), f, n_columns))
    for src, flat in got.items():
        b = column_block(n_columns, comm.size, src)
        out[:, :, b] = flat.to(xc.device).reshape(len(mine), f, b.stop - b.start)
    return out
