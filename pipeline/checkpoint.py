r"""Atomic, rank-count-independent checkpoints of a run's particles.

After cycle ``k`` every rank writes ``checkpoint/cycle-<k>/rank-<r>.pt`` (ids, states,
log-weights); after a barrier rank 0 writes ``checkpoint/latest.json`` by rename (atomic) and
removes older cycle folders. Randomness is counter-based, so (particles, weights, cycle) is the
whole state: a restart replays bit for bit, with any number of ranks (particles are re-sharded
by canonical id).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .distributed.comm import Comm, shard_sizes
from .errors import DiffdaError
from .filters.ensemble import Ensemble


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(root: Path, comm: Comm, ens: Ensemble, cycle: int, fingerprint: str) -> None:
    folder = root / f"cycle-{cycle:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"rank-{comm.rank:04d}.pt.tmp"
    torch.save({"ids": ens.ids.cpu(), "x": ens.x.cpu(), "log_w": ens.log_w.cpu()}, tmp)
    os.replace(tmp, folder / f"rank-{comm.rank:04d}.pt")
    comm.barrier()
    if comm.rank == 0:
        meta = {"cycle": cycle, "ranks": comm.size, "fingerprint": fingerprint}
        _atomic_write_bytes(root / "latest.json", json.dumps(meta).encode())
        for old in root.glob("cycle-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    comm.barrier()


def latest(root: Path) -> dict | None:
    path = root / "latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def load(root: Path, comm: Comm, n_total: int, device: torch.device, dtype: torch.dtype) -> tuple[Ensemble, int]:
    """This rank's shard (by canonical id order) of the latest checkpoint, and its cycle."""
    meta = latest(root)
    if meta is None:
        raise DiffdaError(f"no checkpoint in {root}")
    folder = root / f"cycle-{meta['cycle']:06d}"
    parts = [torch.load(folder / f"rank-{r:04d}.pt") for r in range(meta["ranks"])]
    ids = torch.cat([p["ids"] for p in parts])
    if ids.numel() != n_total:
        raise DiffdaError(f"checkpoint in {root} holds {ids.numel()} particles but filter.particles={n_total}")
    order = torch.argsort(ids)
    x = torch.cat([p["x"] for p in parts])[order]
    log_w = torch.cat([p["log_w"] for p in parts])[order]
    sizes = shard_sizes(n_total, comm.size)
    start = sum(sizes[: comm.rank])
    sl = slice(start, start + sizes[comm.rank])
    return Ensemble(ids[order][sl], x[sl].to(device, dtype), log_w[sl]), int(meta["cycle"])
