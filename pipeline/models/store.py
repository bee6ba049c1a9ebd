r"""A minimal reader of ERA5-layout Zarr stores into a training tensor ``[T, C, H, W]``.

Fields with dims ``(time, [level,] latitude, longitude)`` in any order (transposed by name,
never by position); each variable with a ``level`` dimension gives one channel per level, in
the store's level order, and single-level fields one channel. Channel order: variables in the
order given (default: the store's data variables that have time, latitude and longitude).
Used by :func:`pipeline.models.train.train_from_store`; the data plane's ERA5 reader
(:mod:`pipeline.data.era5`) is the general one, used when it is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .checkpoint import GridLayout


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
    """The physical fields ``[T, C, H, W]`` (float32) and their :class:`GridLayout`."""
    import xarray as xr

    store = resolve_store(path)
    try:
        ds = xr.open_zarr(store)
    except Exception as err:  # noqa: BLE001 - report any open failure as an input problem
        raise InputError(f"cannot open {store} as Zarr: {err}") from None
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.dims:
            raise InputError(f"{store} has no '{dim}' dimension (dims: {', '.join(map(str, ds.dims))}); "
                             "expected ERA5 layout (time, level, latitude, longitude)")
    gridded = [str(v) for v in ds.data_vars if {"time", "latitude", "longitude"} <= set(ds[v].dims)]
    names = list(variables) if variables is not None else gridded
    missing = [v for v in names if v not in gridded]
    if missing:
        raise InputError(f"{store} has no gridded variable(s) {', '.join(missing)}; it has {', '.join(gridded)}")
    if times is not None:
        ds = ds.isel(time=times)
    if levels is not None and "level" in ds.dims:
        have = [float(x) for x in ds.level.values]
        absent = [lv for lv in levels if float(lv) not in have]
        if absent:
            raise InputError(f"{store} has no level(s) {absent} hPa; it has {have}")
        ds = ds.sel(level=list(levels))
    arrays, channels = [], []
    for v in names:
        da = ds[v]
        if "level" in da.dims:
            da = da.transpose("time", "level", "latitude", "longitude")
            arrays.append(np.asarray(da.values, dtype=np.float32))
            channels += [(v, float(lv)) for lv in da.level.values]
        else:
            da = da.transpose("time", "latitude", "longitude")
            arrays.append(np.asarray(da.values, dtype=np.float32)[:, None])
            channels.append((v, None))
    data = torch.from_numpy(np.concatenate(arrays, axis=1))
    if torch.isnan(data).any():
        bad = sorted({f"{c[0]}@{c[1]}" for i, c in enumerate(channels) if torch.isnan(data[:, i]).any()})
        raise InputError(f"{store} holds NaNs in {', '.join(bad)}; select other levels (--set levels=[...])")
    layout = GridLayout(tuple(channels), tuple(float(x) for x in ds.latitude.values),
                        tuple(float(x) for x in ds.longitude.values), dict(ds.attrs))
    return data, layout
