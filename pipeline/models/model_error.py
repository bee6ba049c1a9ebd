r"""Samples of the emulator's one-step model error, for additive inflation
(:mod:`pipeline.filters.additive`).

On a trajectory the filter is not scored on, for cycles ``k`` (every ``stride``-th):

    e_k = x^{k+1} - d(sigma_1 eps_k, t = 1; x^k[, x^{k-1}])     (state units, [*S] each)

the truth minus the emulator's mean forecast from the true states (the filter's own
``predict_mean``, its noise keyed by ``(seed, k, k, "predict")``). ``S`` samples are stored as
``model_error.npz`` beside the checkpoint: ``errors`` ``[S, *S]`` float16 (normalised units, as the
filter's state), ``cycles`` and ``data`` (where they came from). Their mean is the emulator's
one-step bias; the filter uses only the anomalies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

FILE = "model_error.npz"


def estimate(problem, propagator, samples: int, stride: int = 1, progress=None) -> tuple[np.ndarray, list[int]]:
    """``(errors [S, *S] float32, cycles)``: ``e_c`` for the cycles ``c = 0, stride, 2 stride, ...`` the
    forecast starts from, from ``problem``'s truth (a problem whose ``initial_state()`` holds the true
    states up to cycle 0 and ``truth(k)`` that of cycle ``k``)."""
    shape, history = tuple(problem.state_shape), problem.history
    cycles = list(range(0, problem.n_cycles, stride))[:samples]
    if len(cycles) < samples:
        raise InputError(f"the data hold {problem.n_cycles} cycles: {len(cycles)} forecasts at stride {stride}, "
                         f"fewer than the {samples} samples asked; make a longer trajectory "
                         "(make-data --set days=...) or lower --samples")
    x0 = problem.initial_state()
    past = list(x0) if history > 1 else [x0]  # the true states of cycles 1 - K .. 0
    out = []
    for k in range(1, cycles[-1] + 2):
        truth = problem.truth(k)
        if k - 1 in cycles:  # the mean forecast of cycle k from cycles k - K .. k - 1
            cond = torch.stack(past) if history > 1 else past[-1]
            m = propagator.predict_mean(cond[None], torch.tensor([k - 1]), k - 1, shape)[0]
            out.append((truth - m).double().cpu().numpy().astype(np.float32))
            if progress is not None:
                progress(len(out), len(cycles))
        past = (past + [truth])[-history:]
    return np.stack(out), cycles


def save(path: Path, errors: np.ndarray, cycles: list[int], data: str) -> None:
    from .samples import save as write

    write(path, "errors", errors, cycles, data)


def load_anomalies(path: Path, state_shape: tuple[int, ...], key: str = "filter.model_error") -> Tensor:
    """The anomalies ``E`` ``[S, D]`` float64 of the samples in ``path``; an ``InputError`` naming
    ``key`` when the file is missing, unreadable, of another state shape or not finite."""
    from .samples import load_anomalies as load

    return load(path, "errors", state_shape, key, "model-error samples",
                "make it with `diffda model-error --data DIR --checkpoint CKPT` (docs/sphere.md)",
                "filter.additive_inflation=0")
