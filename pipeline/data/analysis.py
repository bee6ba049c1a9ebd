r"""The analysis store: created whole from a template, then region writes of whole cycles.

Layout (opens with a plain ``xarray.open_zarr``): each state variable's weighted mean under its
own name over ``(time, *dims)``, its spread as ``<name>_spread``, optionally the members as
``<name>_members`` over ``(time, member, *dims)``, and per-cycle diagnostics (``ess``,
``resampled``, ...) over ``time``; configuration and software version in the attributes.

Safety rules (what xarray/Zarr users have lost data to): the template is written first with
``to_zarr(compute=False)`` so every chunk boundary is fixed; each cycle is one region write of
one time chunk (chunk = one cycle, so exactly one writer touches each chunk); rewriting a cycle
is harmless (idempotent); metadata is consolidated once, at the end, by one process, and the
attribute ``complete`` is set only then.

CF: the root carries ``Conventions = CF-1.8``, ``title``, ``history``; coordinates get their CF
attributes (``units``, ``standard_name``, ``axis``: :data:`pipeline.data.era5.COORD_ATTRS`);
each field keeps the attributes of the template (``units``, ``long_name``; the gridded problem
fills them from :func:`pipeline.data.era5.cf_attrs`) and diagnostics get a ``long_name``.
Several processes may write at once as long as each writes its own cycles (one time chunk per
cycle, so no two writers touch one chunk or shard); only one process creates and finalises.
Zarr format 3.
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

DIAGNOSTIC_NAMES = {
    "rmse_analysis": "RMSE of the analysis mean against the truth (model units)",
    "rmse_forecast": "RMSE of the forecast mean against the truth (model units)",
    "spread_analysis": "ensemble spread of the analysis (model units)",
    "crps_analysis": "CRPS of the analysis ensemble (model units)",
    "ess": "effective sample size 1 / sum w^2 before resampling",
    "resampled": "1 if the ensemble was resampled in this cycle",
    "cycle_seconds": "wall time of the cycle",
    "denoiser_seconds": "time in denoiser calls (max over ranks)",
    "denoiser_calls": "denoiser calls (sum over ranks)",
}


class AnalysisStore:
    """Writer for ``analysis.zarr``. Use :meth:`create` (fresh or resuming) then :meth:`write_cycle`."""

    def __init__(self, path: Path, times: np.ndarray):
        self.path = Path(path)
        self.times = times

    @classmethod
    def create(cls, path: str | Path, like: xr.Dataset, times: np.ndarray, attrs: dict[str, Any],
               diagnostics: list[str], resume: bool = False, *, member_chunk: int | None = None,
               shard_cycles: int | None = None) -> "AnalysisStore":
        """Write the template (all variables, all cycles, no data) unless resuming an existing one.

        ``like``: one cycle's fields without a ``time`` dimension (coordinates included);
        ``diagnostics``: names of scalar per-cycle variables. ``member_chunk``: chunk the
        ``member`` dimension so that ranks can write their own members of a cycle (each its own
        chunks, :meth:`write_members`); default one chunk. ``shard_cycles``: Zarr 3 shards of that
        many cycles (inner chunks stay one cycle): far fewer files (a year of 6-hourly cycles in
        a few files per variable) but then **one process must write all cycles** of a shard, so
        only with a single writer; and a shard is rewritten whole on every cycle, so a process
        killed mid-write can lose the earlier cycles of that shard (which a resume does not
        rewrite). Off by default: the run writes one file per cycle and variable.
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
            shape = (n, *var.shape)
            chunks = (1, *[min(member_chunk, s) if d == "member" and member_chunk else s
                           for d, s in zip(var.dims, var.shape)])
            data[name] = (("time", *var.dims), da.full(shape, np.nan, dtype=var.dtype, chunks=chunks), var.attrs)
        for name in diagnostics:
            units = {"cycle_seconds": "s", "denoiser_seconds": "s", "comm_seconds": "s", "resample_seconds": "s"}
            dattrs = {"long_name": DIAGNOSTIC_NAMES.get(name, name.replace("_", " "))}
            if name in units:
                dattrs["units"] = units[name]
            data[name] = (("time",), da.full((n,), np.nan, dtype="float64", chunks=(1,)), dattrs)
        ds = xr.Dataset(data, coords={**{k: v for k, v in like.coords.items()}, "time": times})
        from .era5 import COORD_ATTRS

        for c in ds.coords:
            for k, v in COORD_ATTRS.get(str(c), {}).items():
                ds[c].attrs.setdefault(k, v)
        ds.attrs.update({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()})
        ds.attrs.update({"software": f"diffda {__version__}", "complete": 0, "Conventions": "CF-1.8"})
        ds.attrs.setdefault("title", "diffda analysis: weighted ensemble mean, spread and per-cycle diagnostics")
        ds.attrs.setdefault("history", f"{np.datetime64('now', 's')}Z created by diffda {__version__}")
        encoding: dict[str, dict[str, Any]] = {name: {"fill_value": np.nan} for name in data}
        if shard_cycles and shard_cycles > 1:
            if member_chunk:
                raise DiffdaError("shard_cycles needs a single writer; it cannot be combined with member_chunk")
            for name in data:
                inner = ds[name].data.chunksize
                shards = (min(shard_cycles, n), *inner[1:])
                ds[name] = ds[name].chunk(dict(zip(ds[name].dims, shards)))  # template: nothing is written
                encoding[name].update(chunks=inner, shards=shards)
        ds.to_zarr(path, mode="w", compute=False, consolidated=False, encoding=encoding, zarr_format=3)
        return cls(path, times)

    def write_cycle(self, index: int, fields: dict[str, np.ndarray], dims: dict[str, tuple[str, ...]]) -> None:
        """Write cycle ``index``: ``fields[name]`` has the variable's shape without ``time``."""
        self.write_cycles(index, [fields], dims)

    def write_cycles(self, start: int, cycles: list[dict[str, np.ndarray]], dims: dict[str, tuple[str, ...]]) -> None:
        """Write cycles ``start .. start + len(cycles) - 1`` in one region write (each cycle its own
        chunk, written whole); ``cycles[j][name]`` has the variable's shape without ``time``."""
        if not cycles:
            return
        data = {name: (("time", *dims[name]), np.stack([np.asarray(c[name]) for c in cycles]))
                for name in cycles[0]}
        xr.Dataset(data).to_zarr(self.path, region={"time": slice(start, start + len(cycles))}, mode="r+",
                                 consolidated=False)

    def write_members(self, index: int, members: slice, fields: dict[str, np.ndarray],
                      dims: dict[str, tuple[str, ...]]) -> None:
        """Write members ``members`` of cycle ``index`` (``fields[name]``: ``[len, ...]`` without
        ``time``). The slice must fall on the store's member chunks, so that ranks writing
        disjoint slices never touch one chunk."""
        import zarr

        group = zarr.open_group(self.path, mode="r")
        for name in fields:
            arr = group[name]
            axis = 1 + list(dims[name]).index("member")
            step = arr.chunks[axis]
            if members.start % step or (members.stop % step and members.stop != arr.shape[axis]):
                raise DiffdaError(f"members {members.start}:{members.stop} of {name} do not fall on its member "
                                  f"chunks of {step}; write whole chunks (create the store with member_chunk)")
        data = {name: (("time", *dims[name]), np.asarray(value)[None]) for name, value in fields.items()}
        xr.Dataset(data).to_zarr(self.path, region={"time": slice(index, index + 1), "member": members},
                                 mode="r+", consolidated=False)

    def finalise(self) -> None:
        """Mark the store complete and consolidate its metadata (once, by one process)."""
        import zarr

        group = zarr.open_group(self.path, mode="r+")
        group.attrs["complete"] = 1
        zarr.consolidate_metadata(self.path)
