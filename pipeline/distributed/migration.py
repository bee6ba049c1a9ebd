r"""Global resampling over ranks with the fewest particle moves.

Setting. ``N`` particles with canonical ids ``0..N-1`` are spread over ``P`` ranks (any layout;
rank ``r`` holds ``n_r``). Systematic resampling, computed alike on every rank from the gathered
weights and one shared uniform, gives offspring ``j = 0..N-1`` (canonical id ``j``, independent of
``P``) with ancestor ``a_j``. Let ``owner[j]`` be the rank holding ``a_j`` and ``o_r = #{j :
owner[j] = r}`` the offspring rank ``r`` can make from its own particles. After the step rank ``r``
must hold ``T_r`` particles (default ``shard_sizes(N, P)``).

Plan (:func:`plan_migration`, pure). Rank ``r`` keeps its ``min(o_r, T_r)`` offspring of lowest
``j``; the surplus offspring, ordered by ``(owner, j)``, fill the deficit slots, ordered by rank
(rank ``r`` has ``T_r − min(o_r, T_r)`` of them), first to first. Every offspring that moves
leaves a surplus rank for a deficit rank, so

    moved = Σ_r max(0, o_r − T_r) = Σ_r max(0, T_r − o_r),

the lower bound for any plan that ends with ``T_r`` on rank ``r`` (each rank short of particles
must receive at least its shortfall). Ordering the surplus by owner makes the transfers a
"staircase": at most ``2P − 1`` (source, destination) pairs.

Apply (:func:`migrate`). States (and any extra per-particle tensors) are copied from the local
ancestor or received; an ancestor is sent at most once per destination, however many offspring
it has there. Each rank ends with its offspring in increasing ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .comm import Comm, shard_sizes


@dataclass(frozen=True)
class MigrationPlan:
    """``dest[j]``: the rank that holds offspring ``j`` after the step; ``moved``: ``#{j : dest[j] ≠ owner[j]}``."""

    owner: np.ndarray  # [N] int64
    dest: np.ndarray  # [N] int64
    moved: int


def lower_bound(owner: np.ndarray | Sequence[int], targets: Sequence[int]) -> int:
    """``Σ_r max(0, T_r − o_r)``: moves any plan needs, ``o_r = #{j : owner[j] = r}``."""
    o = np.bincount(np.asarray(owner, dtype=np.int64), minlength=len(targets))
    return int(np.maximum(0, np.asarray(targets) - o[: len(targets)]).sum())


def plan_migration(owner: np.ndarray | Sequence[int], targets: Sequence[int]) -> MigrationPlan:
    """The minimal, deterministic migration plan (module docstring).

    ``owner``: ``[N]`` ints in ``0..P-1`` (rank holding offspring ``j``'s ancestor);
    ``targets``: ``[P]`` non-negative ints summing to ``N``. Pure; ``O(N log N)``.
    """
    owner = np.asarray(owner, dtype=np.int64)
    t = np.asarray(targets, dtype=np.int64)
    p = len(t)
    if owner.ndim != 1:
        raise ValueError(f"owner must be 1-d, got shape {owner.shape}")
    if (t < 0).any() or int(t.sum()) != owner.size:
        raise ValueError(f"targets {t.tolist()} must be non-negative and sum to N = {owner.size}")
    if owner.size and (owner.min() < 0 or owner.max() >= p):
        raise ValueError(f"owner ranks must lie in 0..{p - 1}")
    order = np.argsort(owner, kind="stable")  # by (owner, j)
    o = np.bincount(owner, minlength=p)
    start = np.concatenate([[0], np.cumsum(o)[:-1]])
    pos = np.arange(owner.size) - start[owner[order]]  # position of each offspring within its owner
    kept = pos < t[owner[order]]
    dest = np.empty_like(owner)
    dest[order[kept]] = owner[order[kept]]
    deficit = t - np.minimum(o, t)
    dest[order[~kept]] = np.repeat(np.arange(p), deficit)
    return MigrationPlan(owner=owner, dest=dest, moved=int((~kept).sum()))


def gather_by_id(comm: Comm, ids: Tensor, values: Tensor, n: int) -> Tensor:
    """All ranks' ``values`` (``[n_r, *rest]``) in canonical order: ``out[ids] = values`` -> ``[n, *rest]``.

    On every rank, same bits, independent of ``P``: reduce over it in canonical order.
    """
    all_ids = torch.cat([i.to("cpu", torch.int64) for i in comm.all_gather(ids)])
    all_vals = torch.cat(comm.all_gather(values))
    if all_ids.numel() != n or not torch.equal(torch.sort(all_ids).values, torch.arange(n)):
        raise ValueError(f"particle ids over all ranks are not a permutation of 0..{n - 1}")
    out = torch.empty((n, *values.shape[1:]), dtype=values.dtype, device=values.device)
    out[all_ids.to(values.device)] = all_vals
    return out


@dataclass
class Migrated:
    """One rank's particles after :func:`migrate`, in increasing canonical id.

    ``ids``: ``[m]`` int64 offspring ids ``j``; ``ancestors``: ``[m]`` their ``a_j``; ``x``:
    ``[m, *shape]``; ``extras``: each ``[m, ...]``; ``plan``: the global plan (same on all ranks).
    """

    ids: Tensor
    ancestors: Tensor
    x: Tensor
    extras: tuple[Tensor, ...]
    plan: MigrationPlan


def _pack(tensors: Sequence[Tensor], rows: Tensor) -> Tensor:
    """Rows of each tensor as raw bytes side by side: ``[k, Σ bytes per row]`` uint8."""
    dev = rows.device
    return torch.cat([t[rows.to(t.device)].to(dev).reshape(len(rows), -1).contiguous().view(torch.uint8)
                      for t in tensors], dim=1)


def _unpack(buf: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Inverse of :func:`_pack`: tensors shaped ``[k, *t.shape[1:]]`` with ``t.dtype`` for ``t`` in ``like``."""
    out, col = [], 0
    for t in like:
        width = _row_bytes(t)
        piece = buf[:, col:col + width].clone(memory_format=torch.contiguous_format).view(t.dtype).reshape(buf.shape[0], *t.shape[1:])
        out.append(piece)
        col += width
    return out


def _row_bytes(t: Tensor) -> int:
    return int(np.prod(t.shape[1:], dtype=np.int64)) * t.element_size()


def migrate(comm: Comm, ids: Tensor, x: Tensor, ancestors: Tensor | np.ndarray, *extras: Tensor,
            targets: Sequence[int] | None = None) -> Migrated:
    """Apply the minimal migration plan: every rank ends with its offspring's ids and states.

    ``ids``: ``[n_r]`` canonical ids held here; ``x``: ``[n_r, *shape]`` their states; ``ancestors``:
    ``[N]`` (identical on all ranks); ``extras``: per-particle tensors ``[n_r, ...]`` of any dtype and
    device, moved with ``x`` (one message carries them all, as raw bytes); ``targets``: ``[P]`` particles per rank after (default ``shard_sizes(N, P)``).
    Collectives: one ``all_gather`` of ids, one ``exchange`` (all ranks must call).
    """
    anc = np.asarray(ancestors.detach().cpu() if isinstance(ancestors, Tensor) else ancestors, dtype=np.int64)
    n, p, r = anc.size, comm.size, comm.rank
    targets = shard_sizes(n, p) if targets is None else list(targets)
    if len(targets) != p:
        raise ValueError(f"targets has {len(targets)} entries for {p} ranks")
    for e in (x, *extras):
        if e.shape[0] != ids.shape[0]:
            raise ValueError(f"per-particle tensors need {ids.shape[0]} rows, got shape {tuple(e.shape)}")

    # who holds which id
    held = [g.to("cpu", torch.int64).numpy() for g in comm.all_gather(ids.reshape(-1))]
    holder = np.full(n, -1, dtype=np.int64)
    for src, g in enumerate(held):
        if g.size and (g.min() < 0 or g.max() >= n or (holder[g] != -1).any()):
            raise ValueError(f"particle ids over all ranks are not a permutation of 0..{n - 1}")
        holder[g] = src
    if (holder == -1).any():
        raise ValueError(f"particle ids over all ranks are not a permutation of 0..{n - 1}")
    if anc.size and (anc.min() < 0 or anc.max() >= n):
        raise ValueError(f"ancestors must lie in 0..{n - 1}")

    owner = holder[anc]
    plan = plan_migration(owner, targets)
    dest = plan.dest

    # ancestors each (src, dst) pair must carry: unique, increasing; all ranks compute them alike
    def carried(src: int, dst: int) -> np.ndarray:
        return np.unique(anc[(owner == src) & (dest == dst)])

    local_row = np.full(n, -1, dtype=np.int64)
    local_row[held[r]] = np.arange(held[r].size)
    tensors = (x, *extras)
    dev = x.device
    sends = {}
    for dst in range(p):
        if dst != r:
            a = carried(r, dst)
            if a.size:
                sends[dst] = _pack(tensors, torch.as_tensor(local_row[a], device=dev))
    row_bytes = sum(_row_bytes(t) for t in tensors)
    arrived = comm.exchange(sends, (row_bytes,), torch.uint8)

    # offspring kept here copy their local ancestor; the others read the arrival from their owner
    mine = np.flatnonzero(dest == r)
    m = mine.size
    out = [torch.empty((m, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in tensors]
    for src in range(p):
        sel = np.flatnonzero(owner[mine] == src)
        if not sel.size:
            continue
        a_sel = anc[mine[sel]]
        if src == r:
            source, rows = list(tensors), local_row[a_sel]
        else:
            a = carried(src, r)
            if src not in arrived or arrived[src].shape[0] != a.size:
                raise RuntimeError(f"rank {r}: expected {a.size} particles from rank {src}; the ranks' plans disagree")
            source, rows = _unpack(arrived[src].to(dev), tensors), np.searchsorted(a, a_sel)
        at, idx = torch.as_tensor(sel), torch.as_tensor(rows)
        for o, s_ in zip(out, source):
            o[at.to(o.device)] = s_[idx.to(s_.device)].to(o.device)
    return Migrated(
        ids=torch.as_tensor(mine, dtype=torch.int64, device=ids.device),
        ancestors=torch.as_tensor(anc[mine], dtype=torch.int64, device=ids.device),
        x=out[0],
        extras=tuple(out[1:]),
        plan=plan,
    )
