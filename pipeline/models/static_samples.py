r"""Samples of the state's tendency over ``L`` cycles (6 hours each; ``L = 1`` by default), for the static
covariance of ``filter.static_gain`` (:mod:`pipeline.filters.static_gain`).

On a training trajectory (not the one scored), for ``S`` cycles ``k`` spread evenly over it:

    t_k = x^{k+L} - x^k         (normalised units, as the filter's state; [*S] each)

Their covariance is that of the 6-hour change of the atmosphere (``L = 1``): large-scale, balanced (a
temperature tendency comes with the geopotential and wind tendencies the dynamics tie to it), and of
the size of the errors a 6-hourly analysis has to correct. Stored as ``static_samples.npz`` beside
the checkpoint: ``samples`` ``[S, *S]`` float16, ``cycles`` and ``data`` (where they came from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from ..errors import InputError

FILE = "static_samples.npz"


def estimate(problem, samples: int, progress=None, lag: int = 1) -> tuple[np.ndarray, list[int]]:
    """``(tendencies [S, *S] float32, cycles)``: ``t_k`` over ``lag >= 1`` cycles for ``S`` cycles ``k``
    evenly spaced over ``problem``'s truth (``truth(k)`` and ``truth(k + lag)`` of those cycles only)."""
    n = problem.n_cycles
    if n - lag < samples:
        raise InputError(f"the data hold {n} cycles: {max(n - lag, 0)} tendencies over {lag} cycle(s), "
                         f"fewer than the {samples} samples asked; make a longer trajectory "
                         "(make-data --set days=...) or lower --samples")
    cycles = [1 + (i * (n - lag)) // samples for i in range(samples)]
    out = []
    for k in cycles:
        x = problem.truth(k)
        out.append((problem.truth(k + lag) - x).double().cpu().numpy().astype(np.float32))
        if progress is not None:
            progress(len(out), samples)
    return np.stack(out), cycles


def save(path: Path, tendencies: np.ndarray, cycles: list[int], data: str) -> None:
    from .samples import save as write

    write(path, "samples", tendencies, cycles, data)


def load_anomalies(path: Path, state_shape: tuple[int, ...], key: str = "filter.static_samples") -> Tensor:
    """The anomalies ``[S, D]`` float64 of the tendencies in ``path``; an ``InputError`` naming ``key``
    when the file is missing, unreadable, of another state shape or not finite."""
    from .samples import load_anomalies as load

    return load(path, "samples", state_shape, key, "static samples",
                "make it with `diffda static-samples --data TRAIN_DIR --checkpoint CKPT` (docs/sphere.md)",
                "filter.static_gain=0")
