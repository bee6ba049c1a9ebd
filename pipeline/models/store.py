r"""A minimal reader of ERA5-layout Zarr stores into a training tensor ``[T, C, H, W]``.

Fields with dims ``(time, [level,] latitude, longitude)`` in any order (transposed by name,
never by position); each variable with a ``level`` dimension gives one channel per level, in
the store's level order, and single-level fields one channel. Channel order: variables in the
order given (default: the store's data variables that have time, latitude and longitude).
Used by :func:`pipeline.models.train.train_from_store`; implemented on the data plane's ERA5
reader (:mod:`pipeline.data.era5`), so training and assimilation read stores the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .network_checkpoint import GridLayout


def resolve_store(path: str | Path) -> Path:
    """``path`` itself if it is a Zarr store, else ``path/truth.zarr``."""
    p = Path(path)
    if (p / "truth.zarr").exists() and not (p / "zarr.json").exists() and not (p / ".zgroup").exists():
        return p / "truth.zarr"
    if not p.exists():
        raise InputError(f"data store {p} not found; make one with `diffda make-data sphere --out {p}`")
    return p


def read_trajectory(path: str | Path, variables: Sequence[str] | None = None,
                    levels: Sequence[float] | None = None, times: slice | None = None) -> tuple[Tensor, GridLayout]:
    """The physical fields ``[T, C, H, W]`` (float32) and their :class:`GridLayout`.

    Read through :class:`pipeline.data.era5.Era5Reader` (the one way of reading ERA5-layout
    stores); ``times`` is a slice of time indices.
    """
    from ..data.era5 import Era5Reader

    store = resolve_store(path)
    reader = Era5Reader(store, variables=variables, levels=levels, name=str(store), check_gaps=False)
    n = len(reader)
    sl = times if times is not None else slice(0, n)
    data = torch.from_numpy(np.ascontiguousarray(reader.read(slice(*sl.indices(n)))))
    channels = reader.layout.channels
    if torch.isnan(data).any():
        bad = sorted({f"{c[0]}@{c[1]}" for i, c in enumerate(channels) if torch.isnan(data[:, i]).any()})
        raise InputError(f"{store} holds NaNs in {', '.join(bad)}; select other levels (--set levels=[...])")
    return data, reader.layout
