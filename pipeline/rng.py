r"""Counter-based randomness: one stream per (seed, cycle, global particle index, purpose).

A particle's noise depends only on those four numbers, never on which rank holds it or on the
micro-batch it is sampled in, so results do not depend on the number of ranks and a restart
replays bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

PURPOSES = {"init": 0, "predict": 1, "propagate": 2, "resample": 3, "jitter": 4, "data": 5, "train": 6}


def stream_seed(seed: int, cycle: int, index: int, purpose: str) -> int:
    """A 63-bit seed for the stream ``(seed, cycle, index, purpose)``."""
    key = f"{seed}:{cycle}:{index}:{PURPOSES[purpose]}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def generator(seed: int, cycle: int, index: int, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for one stream."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, cycle, index, purpose))
    return g


class ParticleNoise:
    """Per-particle generators for one (seed, cycle, purpose); draws are ``[B, *shape]``.

    ``indices`` are the global particle indices of a rank's shard; ``draw(rows, shape)`` gives the
    next normal draw for the particles at those local rows, each from its own stream.
    """

    def __init__(self, seed: int, cycle: int, indices: Sequence[int], purpose: str,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64):
        self.device, self.dtype = torch.device(device), dtype
        self.generators = [generator(seed, cycle, int(i), purpose, self.device) for i in indices]

    def normal(self, rows: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
        return torch.stack([
            torch.randn(tuple(shape), generator=self.generators[r], device=self.device, dtype=self.dtype)
            for r in rows
        ])


def shared_uniform(seed: int, cycle: int, purpose: str = "resample") -> float:
    """One ``U(0, 1)`` number, identical on every rank (no communication needed)."""
    g = generator(seed, cycle, -1, purpose)
    return float(torch.rand((), generator=g, dtype=torch.float64))
