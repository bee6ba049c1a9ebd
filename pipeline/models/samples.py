"""Stored samples of the state (model errors, tendencies) and their anomalies, for the filters'
covariances: the one writer and loader of :mod:`.model_error` and :mod:`.static_samples` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError


def save(path: Path, field: str, samples: np.ndarray, cycles: list[int], data: str) -> None:
    """Write ``samples`` ``[S, *S]`` (float16) under ``field``, the ``cycles`` they came from and the
    ``data`` directory, compressed and atomically (no partial file on failure)."""
    from ..data.atomic import write_file

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **{field: samples.astype(np.float16)}, cycles=np.asarray(cycles),
                                data=np.asarray(data))

    write_file(path, write)


def load_anomalies(path: Path, field: str, state_shape: tuple[int, ...], key: str, what: str, fix: str,
                   off: str) -> Tensor:
    """The anomalies ``E - mean(E)`` ``[S, D]`` float64 of the samples ``path[field]`` ``[S, *S]``; an
    ``InputError`` naming ``key``, ``what`` the file holds and ``fix`` when the file is missing (and how to
    turn the feature ``off``), unreadable, of another state shape or not finite."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{key}: no {what} at {path}; {fix}, or set {off}")
    try:
        with np.load(path) as f:
            e = np.asarray(f[field], dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{key}: {path} is not a readable file of {what} ({err}); {fix}") from None
    if tuple(e.shape[1:]) != tuple(state_shape) or e.shape[0] < 2:
        raise InputError(f"{key}: {path} holds samples of shape {list(e.shape)}, but the state is "
                         f"{list(state_shape)} (at least 2 samples needed); {fix} for this checkpoint")
    if not np.isfinite(e).all():
        raise InputError(f"{key}: {path} holds non-finite values; {fix}")
    e = e.reshape(e.shape[0], -1)
    return torch.from_numpy(e - e.mean(0))
