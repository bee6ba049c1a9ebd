r"""Counter-based randomness: one stream per (seed, cycle, global particle index, purpose).

Per-particle normals come from Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as
easy as 1, 2, 3"), a bijection of a 128-bit counter under a 64-bit key, evaluated as vectorised
integer tensor ops (int64 holding uint32 lanes, CPU or CUDA). Layout:

    key     = (seed mod 2^32, seed div 2^32 mod 2^32)
    counter = (block, particle index, cycle, purpose)   (each mod 2^32)

One block gives four uint32 words -> two float64 uniforms in (0, 1) (53 bits each) -> two normals by
Box-Muller. A particle's ``j``-th draw of ``D`` values reads blocks ``o_j .. o_j + ceil(D/2) - 1``, with
``o_j`` the blocks its earlier draws used, so a whole micro-batch (or ensemble) is drawn in one
batched call and a particle's noise still depends only on its four numbers: never on the rank that
holds it, the micro-batch, or how many particles are drawn with it. A restart replays bit for bit.
The integer stream is identical on every device; the normals agree across devices to round-off
(``log``, ``cos`` in float64), then are cast to the requested dtype.

``generator`` (a seeded ``torch.Generator``) remains for the few scalar or per-step streams that
are not per particle (the shared resampling uniform, training batches).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

PURPOSES = {"init": 0, "predict": 1, "propagate": 2, "resample": 3, "jitter": 4, "data": 5, "train": 6,
            "measure": 7, "analysis": 8, "additive": 9}

_MASK = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
ROUNDS = 10


def stream_seed(seed: int, cycle: int, index: int, purpose: str) -> int:
    """A 63-bit seed for the stream ``(seed, cycle, index, purpose)``."""
    key = f"{seed}:{cycle}:{index}:{PURPOSES[purpose]}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def generator(seed: int, cycle: int, index: int, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for one stream."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, cycle, index, purpose))
    return g


def climatology_times(seed: int, ids: Tensor, history: int, length: int) -> list[int]:
    """``filter.init_climatology``: particle ``i``'s time index ``t_i ~ U{history-1, .., length-1}`` in a
    store of ``length`` times, from its own stream ``(seed, 0, i, "init")``: the same on whichever rank."""
    return [int(torch.randint(history - 1, length, (1,), generator=generator(seed, 0, int(i), "init")))
            for i in ids.tolist()]


def _mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """``(hi, lo)`` 32-bit halves of ``a * m`` for uint32 ``a`` (int64 tensor) and a uint32 constant,
    without int64 overflow: ``m = m_hi 2^16 + m_lo``, every partial product below 2^48."""
    p_lo = a * (m & 0xFFFF)
    p_hi = a * (m >> 16)
    low = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (low >> 32), low & _MASK


def philox4x32(counter: Sequence[Tensor], key: tuple[int, int], rounds: int = ROUNDS) -> tuple[Tensor, ...]:
    """Philox4x32-``rounds`` of counters ``(c0, c1, c2, c3)`` (int64 tensors holding uint32, broadcastable)
    under ``key = (k0, k1)``: four uint32 words (int64 tensors)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key[0] & _MASK, key[1] & _MASK
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return c0, c1, c2, c3


def philox_normal(seed: int, cycle: int, purpose: str, index: Tensor, offset: Tensor, count: int,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
    """Normals ``[B, count]``: row ``b`` is the stream of particle ``index[b]`` read from block ``offset[b]``
    on (``index``, ``offset`` int64 ``[B]``); uses ``ceil(count / 2)`` blocks per row."""
    blocks = (count + 1) // 2
    index = index.to(device=device, dtype=torch.int64)[:, None]
    c0 = (offset.to(device=device, dtype=torch.int64)[:, None]
          + torch.arange(blocks, device=device, dtype=torch.int64)[None]) & _MASK
    c1 = (index & _MASK).expand_as(c0)
    c2 = torch.full_like(c0, cycle & _MASK)
    c3 = torch.full_like(c0, PURPOSES[purpose])
    w0, w1, w2, w3 = philox4x32((c0, c1, c2, c3), (seed & _MASK, (seed >> 32) & _MASK))
    scale = 2.0 ** -53
    u1 = (((w0 >> 5) << 26) + (w1 >> 6)).double().add_(0.5).mul_(scale)  # (0, 1), 53 bits
    u2 = (((w2 >> 5) << 26) + (w3 >> 6)).double().add_(0.5).mul_(scale)
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    z = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).flatten(1)  # [B, 2 blocks]
    return z[:, :count].to(dtype)


class ParticleNoise:
    """Per-particle counter-based streams for one (seed, cycle, purpose); draws are ``[B, *shape]``.

    ``indices`` are the global particle indices of a rank's shard; ``normal(rows, shape)`` gives the
    next normal draw for the particles at those local rows, each from its own stream, in one batched
    Philox call (each row's block offset advances by ``ceil(prod(shape) / 2)``).
    """

    def __init__(self, seed: int, cycle: int, indices: Sequence[int] | Tensor, purpose: str,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64):
        if purpose not in PURPOSES:
            raise ValueError(f"unknown noise purpose {purpose!r}; choose one of {sorted(PURPOSES)}")
        self.seed, self.cycle, self.purpose = int(seed), int(cycle), purpose
        self.device, self.dtype = torch.device(device), dtype
        self.indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).to(self.device)
        self.offset = torch.zeros_like(self.indices)

    def normal(self, rows: Sequence[int] | slice | None, shape: Sequence[int]) -> Tensor:
        """``[len(rows), *shape]`` (``rows=None``: every particle of the shard)."""
        if rows is None:
            rows = slice(None)
        elif not isinstance(rows, slice):
            rows = torch.as_tensor(list(rows), dtype=torch.int64, device=self.device)
        count = math.prod(shape)
        idx, off = self.indices[rows], self.offset[rows]
        z = philox_normal(self.seed, self.cycle, self.purpose, idx, off, count, self.device, self.dtype)
        self.offset[rows] += (count + 1) // 2
        return z.reshape((idx.numel(), *shape))


def shared_uniform(seed: int, cycle: int, purpose: str = "resample") -> float:
    """One ``U(0, 1)`` number, identical on every rank (no communication needed)."""
    g = generator(seed, cycle, -1, purpose)
    return float(torch.rand((), generator=g, dtype=torch.float64))
