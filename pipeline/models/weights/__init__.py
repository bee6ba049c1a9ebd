"""Checkpoints shipped with diffda (package data).

``sphere64x32/``: the neural emulator of the ``sphere`` preset (Held–Suarez on the
WeatherBench2 64×32 grid; temperature, geopotential, u and v at 250, 500 and 850 hPa; history 1).
How it was made and how good it is: ``README.md`` in that directory and ``docs/benchmarks.md``.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError

SPHERE64X32 = Path(__file__).resolve().parent / "sphere64x32"


def default_checkpoint() -> Path:
    """The shipped sphere checkpoint directory (refused with a clear message when missing)."""
    if not (SPHERE64X32 / "meta.json").is_file() or not (SPHERE64X32 / "model.safetensors").is_file():
        raise InputError(f"the shipped checkpoint {SPHERE64X32} is missing (an incomplete install?); "
                         "train one with `diffda train --data DIR --out DIR` and pass --checkpoint DIR")
    return SPHERE64X32
