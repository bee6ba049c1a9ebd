r"""Self-verifying, rank-count-independent checkpoints of a run's particles.

After cycle ``k`` every rank writes ``checkpoint/cycle-<k>/rank-<r>.pt`` (ids, states,
log-weights) atomically; the ranks' sha256 digests are gathered and rank 0 writes the pointer
``checkpoint/latest.json`` by rename: ``{"cycle", "ranks", "fingerprint", "checkpoints": [newest,
previous]}``, each entry ``{"cycle", "ranks", "sha256": {file: digest}}``. The last two
checkpoints are kept. :func:`load` verifies the newest entry's files against their digests; a
missing or corrupt file is reported (its path, why) and the previous entry is used instead, so a
run resumes from there and replays bit for bit (randomness is counter-based: particles, weights
and cycle are the whole state). With no usable entry it raises, naming the files and ``--fresh``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import torch

from .data.atomic import write_bytes
from .distributed.comm import Comm, shard_sizes
from .errors import DiffdaError
from .filters.ensemble import Ensemble

POINTER = "latest.json"


def _folder(root: Path, cycle: int) -> Path:
    return root / f"cycle-{cycle:06d}"


def _name(rank: int) -> str:
    return f"rank-{rank:04d}.pt"


def save(root: Path, comm: Comm, ens: Ensemble, cycle: int, fingerprint: str) -> None:
    folder = _folder(root, cycle)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"ids": ens.ids.cpu(), "x": ens.x.cpu(), "log_w": ens.log_w.cpu()}, buf)
    data = buf.getvalue()
    write_bytes(folder / _name(comm.rank), data)
    digest = torch.tensor(list(hashlib.sha256(data).digest()), dtype=torch.float64, device=comm.device)
    digests = [bytes(int(v) for v in d.cpu().tolist()).hex() for d in comm.all_gather(digest)]
    if comm.rank == 0:
        entry = {"cycle": cycle, "ranks": comm.size, "sha256": {_name(r): h for r, h in enumerate(digests)}}
        old = _read_pointer(root) if (root / POINTER).exists() else None
        previous = [e for e in (old or {}).get("checkpoints", [])[:1] if e["cycle"] != cycle]
        meta = {"cycle": cycle, "ranks": comm.size, "fingerprint": fingerprint, "checkpoints": [entry, *previous]}
        write_bytes(root / POINTER, json.dumps(meta).encode())
        keep = {_folder(root, e["cycle"]) for e in meta["checkpoints"]}
        for f in root.glob("cycle-*"):
            if f not in keep:
                shutil.rmtree(f, ignore_errors=True)
    comm.barrier()


def _read_pointer(root: Path) -> dict:
    path = root / POINTER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DiffdaError(f"checkpoint pointer {path} is unreadable ({err}); pass --fresh to start over "
                          f"(the cycles done are lost)") from None


def latest(root: Path) -> dict | None:
    """The pointer of the checkpoints in ``root`` (None when there are none)."""
    return _read_pointer(root) if (root / POINTER).exists() else None


def _entries(meta: dict) -> list[dict]:
    if "checkpoints" in meta:
        return list(meta["checkpoints"])
    return [{"cycle": meta["cycle"], "ranks": meta["ranks"], "sha256": None}]  # older pointer: no digests


def _verified(root: Path, entry: dict) -> tuple[list[dict] | None, str]:
    """The entry's rank files loaded, or (None, why not) naming the first bad file."""
    folder = _folder(root, int(entry["cycle"]))
    parts = []
    for r in range(int(entry["ranks"])):
        path = folder / _name(r)
        try:
            data = path.read_bytes()
        except OSError:
            return None, f"{path} is missing"
        want = (entry.get("sha256") or {}).get(_name(r))
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            return None, f"{path} is corrupt (sha256 differs from {root / POINTER}; {len(data)} bytes)"
        try:
            parts.append(torch.load(io.BytesIO(data)))
        except Exception as err:  # noqa: BLE001  (a truncated zip, an unpickling error)
            return None, f"{path} is unreadable ({type(err).__name__})"
    return parts, ""


def load(root: Path, comm: Comm, n_total: int, device: torch.device, dtype: torch.dtype,
         skipped: list[str] | None = None) -> tuple[Ensemble, int]:
    """This rank's shard (by canonical id order) of the newest usable checkpoint, and its cycle.

    Each checkpoint passed over is appended to ``skipped`` as ``"cycle K: PATH is ..."``.
    """
    meta = latest(root)
    if meta is None:
        raise DiffdaError(f"no checkpoint in {root}")
    reasons = []
    for entry in _entries(meta):
        parts, why = _verified(root, entry)
        if parts is not None:
            break
        reasons.append(f"cycle {entry['cycle']}: {why}")
    else:
        raise DiffdaError(f"no usable checkpoint in {root}: " + "; ".join(reasons)
                          + ". Pass --fresh to start over (the cycles done are lost)")
    if skipped is not None:
        skipped.extend(reasons)
    ids = torch.cat([p["ids"] for p in parts])
    if ids.numel() != n_total:
        raise DiffdaError(f"checkpoint in {root} holds {ids.numel()} particles but filter.particles={n_total}")
    order = torch.argsort(ids)
    x = torch.cat([p["x"] for p in parts])[order]
    log_w = torch.cat([p["log_w"] for p in parts])[order]
    sizes = shard_sizes(n_total, comm.size)
    start = sum(sizes[: comm.rank])
    sl = slice(start, start + sizes[comm.rank])
    return Ensemble(ids[order][sl], x[sl].to(device, dtype), log_w[sl]), int(entry["cycle"])
