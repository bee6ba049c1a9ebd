r"""The analysis store: created whole from a template, then one region write per cycle.

Layout (opens with a plain ``xarray.open_zarr``): each state variable's weighted mean under its
own name over ``(time, *dims)``, its spread as ``<name>_spread``, optionally the members as
``<name>_members`` over ``(time, member, *dims)``, and per-cycle diagnostics (``ess``,
``resampled``, ...) over ``time``; configuration and software version in the attributes.

Safety rules (what xarray/Zarr users have lost data to): the template is written first with
``to_zarr(compute=False)`` so every chunk boundary is fixed; each cycle is one region write of
one time chunk (chunk = one cycle, so exactly one writer touches each chunk); rewriting a cycle
is harmless (idempotent); metadata is consolidated once, at the end, by one process, and the
attribute ``complete`` is set only then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .. import __version__
from ..errors import DiffdaError


class AnalysisStore:
    """Writer for ``analysis.zarr``. Use :meth:`create` (fresh or resuming) then :meth:`write_cycle`."""

    def __init__(self, path: Path, times: np.ndarray):
        self.path = Path(path)
        self.times = times

    @classmethod
    def create(cls, path: str | Path, like: xr.Dataset, times: np.ndarray, attrs: dict[str, Any],
               diagnostics: list[str], resume: bool = False) -> "AnalysisStore":
        """Write the template (all variables, all cycles, no data) unless resuming an existing one.

        ``like``: one cycle's fields without a ``time`` dimension (coordinates included);
        ``diagnostics``: names of scalar per-cycle variables.
        """
        path = Path(path)
        if resume and path.exists():
            existing = xr.open_zarr(path, consolidated=False)
            if existing.sizes.get("time") != len(times) or not np.array_equal(existing.time.values, times):
                raise DiffdaError(f"{path} exists with other times; move it away or choose another --out")
            return cls(path, times)
        n = len(times)
        data: dict[str, Any] = {}
        for name, var in like.data_vars.items():
            shape, chunks = (n, *var.shape), (1, *var.shape)
            data[name] = (("time", *var.dims), da.full(shape, np.nan, dtype=var.dtype, chunks=chunks), var.attrs)
        for name in diagnostics:
            data[name] = (("time",), da.full((n,), np.nan, dtype="float64", chunks=(1,)))
        ds = xr.Dataset(data, coords={**{k: v for k, v in like.coords.items()}, "time": times})
        ds.attrs.update({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()})
        ds.attrs.update({"software": f"diffda {__version__}", "complete": 0})
        encoding = {name: {"fill_value": np.nan} for name in data}
        ds.to_zarr(path, mode="w", compute=False, consolidated=False, encoding=encoding, zarr_format=3)
        return cls(path, times)

    def write_cycle(self, index: int, fields: dict[str, np.ndarray], dims: dict[str, tuple[str, ...]]) -> None:
        """Write cycle ``index``: ``fields[name]`` has the variable's shape without ``time``."""
        data = {name: (("time", *dims[name]), np.asarray(value)[None]) for name, value in fields.items()}
        ds = xr.Dataset(data)
        ds.to_zarr(self.path, region={"time": slice(index, index + 1)}, mode="r+", consolidated=False)

    def finalise(self) -> None:
        """Mark the store complete and consolidate its metadata (once, by one process)."""
        import zarr

        group = zarr.open_group(self.path, mode="r+")
        group.attrs["complete"] = 1
        zarr.consolidate_metadata(self.path)
