r"""Observations from a reference store (the GenCast seed experiment's set-up).

**For the sphere generator and any other producer of ``observations.zarr``:** call

    from pipeline.data.observe import ObservationSpec, build_observations, write_observations
    obs = build_observations(truth_ds, ObservationSpec())       # lazy, same layout as truth_ds
    write_observations(obs, out_dir / "observations.zarr")

(or :func:`make_observations` from path to path). The default spec observes ``temperature`` at
every level of the reference on every 2nd grid point in latitude and longitude, with noise of
standard deviation 1 K, seed 0.

The observations store has the ERA5 layout of the reference (dims ``time, level, latitude,
longitude``, ERA5 long names, the reference's coordinates) and holds only the observed
variables and levels, with NaN wherever a point is not observed:

    y(v, l, t, i, j) = x(v, l, t, i, j) + sigma_v * eps(seed, v, l, t)[i, j]   where mask(i, j),
                       NaN                                                        elsewhere.

``mask`` is fixed in time (stations do not move): every ``thinning``-th point in latitude and
longitude counted on the ascending-latitude grid (so both latitude orders observe the same
places), optionally reduced to a random subset of ``stations`` points (a count, or a fraction
when below 1), drawn once from ``seed``. The noise of one (variable, level, time) comes from its
own counter-based generator keyed on ``(seed, variable, level, time)``, so it does not depend
on the chunking, on which times or levels are built together, or on the machine. Each observed
variable carries the attribute ``noise_std`` (physical units); the spec itself is stored as
JSON in the root attribute ``observation_spec``. Real observation stores in the same layout
(NaN = unobserved, ``noise_std`` per variable) are read the same way by
:mod:`pipeline.data.gridded`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .atomic import write_atomic

SPATIAL = ("latitude", "longitude")


@dataclass(frozen=True)
class ObservationSpec:
    """What to observe of a reference, and how noisily.

    ``variables``: ERA5 long names; ``levels``: hPa (``None`` = every level of the reference);
    ``thinning``: every n-th grid point in latitude and longitude (an int, or ``(n_lat, n_lon)``;
    1 = every point); ``stations``: keep a random subset of the thinned points (count, or a
    fraction in (0, 1); ``None`` = all; drawn from ``station_seed``, default ``seed``); ``noise_std``: standard deviation per variable in the
    variable's units (a variable without an entry uses ``default_noise_std``); ``seed``.
    """

    variables: tuple[str, ...] = ("temperature",)
    levels: tuple[float, ...] | None = None
    thinning: tuple[int, int] = (2, 2)
    stations: float | None = None
    noise_std: Mapping[str, float] = field(default_factory=lambda: {"temperature": 1.0})
    default_noise_std: float = 1.0
    seed: int = 0
    station_seed: int | None = None  # the draw of ``stations``; None = ``seed``

    def __post_init__(self) -> None:
        thin = self.thinning
        thin = (int(thin), int(thin)) if np.isscalar(thin) else tuple(int(t) for t in thin)
        if len(thin) != 2 or min(thin) < 1:
            raise InputError(f"observation thinning={self.thinning!r}: give one stride >= 1 or [n_lat, n_lon]")
        object.__setattr__(self, "thinning", thin)
        vars_ = (self.variables,) if isinstance(self.variables, str) else tuple(self.variables)
        if not vars_:
            raise InputError("observation variables is empty: name at least one variable, e.g. [temperature]")
        object.__setattr__(self, "variables", vars_)
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(float(lv) for lv in np.atleast_1d(self.levels)))
        object.__setattr__(self, "noise_std", {str(k): float(v) for k, v in dict(self.noise_std).items()})
        for k, v in self.noise_std.items():
            if not v > 0:
                raise InputError(f"observation noise_std[{k}]={v}: must be > 0")
        if self.stations is not None and not self.stations > 0:
            raise InputError(f"observation stations={self.stations}: give a count >= 1 or a fraction in (0, 1)")

    def std(self, variable: str) -> float:
        return float(self.noise_std.get(variable, self.default_noise_std))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variables"], d["thinning"] = list(self.variables), list(self.thinning)
        d["levels"] = None if self.levels is None else list(self.levels)
        d["noise_std"] = dict(self.noise_std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "ObservationSpec":
        """From a config mapping; unknown keys are refused with their names."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown observation key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


def observation_mask(latitude: np.ndarray, longitude: np.ndarray, spec: ObservationSpec) -> np.ndarray:
    """Boolean ``[H, W]`` in the given latitude/longitude order: True where observed."""
    lat = np.asarray(latitude, dtype=float)
    lon = np.asarray(longitude, dtype=float)
    lat_rank, lon_rank = grid_ranks(lat, lon)  # index on the ascending grid
    mask = (lat_rank % spec.thinning[0] == 0)[:, None] & (lon_rank % spec.thinning[1] == 0)[None, :]
    if spec.stations is not None:
        # candidates enumerated on the sorted grid, so the draw does not depend on the stored order
        flat_sorted = (lat_rank[:, None] * len(lon) + lon_rank[None, :])  # position on the sorted grid
        cand = np.flatnonzero(mask)
        cand = cand[np.argsort(flat_sorted.ravel()[cand])]
        n = int(round(spec.stations * len(cand))) if spec.stations < 1 else int(spec.stations)
        if n > len(cand):
            raise InputError(f"observation stations={spec.stations} exceeds the {len(cand)} candidate grid points "
                             f"(after thinning {spec.thinning}); lower it or the thinning")
        seed = spec.seed if spec.station_seed is None else spec.station_seed
        rng = np.random.default_rng([seed, 0x5747])  # 'stations'
        keep = np.zeros(mask.size, dtype=bool)
        keep[rng.choice(cand, size=n, replace=False)] = True
        mask = keep.reshape(mask.shape)
    return mask


def _time_key(t: Any) -> int:
    """A non-negative integer for a time label (datetime64 -> seconds since 1970, offset)."""
    if isinstance(t, np.datetime64) or np.issubdtype(np.asarray(t).dtype, np.datetime64):
        v = int(np.asarray(t).astype("datetime64[s]").astype(np.int64))
    else:
        v = int(np.asarray(t).astype(np.int64))
    return v & 0xFFFF_FFFF_FFFF_FFFF


def noise(seed: int, variable: str, level: float | None, time: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise of one (variable, level, time), independent of chunking."""
    lkey = 0xFFFF if level is None else int(round(float(level) * 1000))
    rng = np.random.default_rng([int(seed), zlib.crc32(variable.encode()), lkey, _time_key(time)])
    return rng.standard_normal(shape)


def grid_ranks(latitude: np.ndarray, longitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each stored row's/column's index on the ascending latitude / 0..360 longitude grid."""
    lat_rank = np.argsort(np.argsort(np.asarray(latitude, float), kind="stable"), kind="stable")
    lon_rank = np.argsort(np.argsort(np.mod(np.asarray(longitude, float), 360.0), kind="stable"), kind="stable")
    return lat_rank, lon_rank


def _observe_block(block: np.ndarray, times: np.ndarray, levels: list[float | None], variable: str,
                   std: float, seed: int, mask: np.ndarray, ranks: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``block``: ``[t, L, H, W]`` physical values for ``times`` ``[t]`` and ``levels`` ``[L]``.

    The noise is drawn on the sorted grid and mapped to the stored order, so a point gets the
    same noise whichever way the store runs."""
    out = np.full(block.shape, np.nan, dtype=block.dtype)
    rows, cols = ranks[0][:, None], ranks[1][None, :]
    for i, t in enumerate(times):
        for j, lv in enumerate(levels):
            eps = noise(seed, variable, lv, t, mask.shape)[rows, cols]
            out[i, j][mask] = (block[i, j] + std * eps)[mask]
    return out


def build_observations(reference: xr.Dataset, spec: ObservationSpec | None = None) -> xr.Dataset:
    """The observations of ``reference`` under ``spec`` (lazy when the reference is dask-backed).

    ``reference`` has ERA5 dims (``time, [level,] latitude, longitude`` in any order). Returns a
    dataset with the observed variables only, dims ``(time, level, latitude, longitude)``
    (``(time, latitude, longitude)`` for single-level fields), NaN where unobserved.
    """
    import dask.array as dsa

    spec = spec or ObservationSpec()
    for dim in ("time", *SPATIAL):
        if dim not in reference.dims:
            raise InputError(f"reference has no '{dim}' dimension (dims: {', '.join(map(str, reference.dims))}); "
                             "expected the ERA5 layout (time, level, latitude, longitude)")
    missing = [v for v in spec.variables if v not in reference.data_vars]
    if missing:
        raise InputError(f"the reference has no variable(s) {', '.join(missing)} to observe; it has "
                         f"{', '.join(map(str, reference.data_vars))}; fix observations.variables")
    mask = observation_mask(reference.latitude.values, reference.longitude.values, spec)
    times = reference.time.values
    out: dict[str, xr.DataArray] = {}
    for v in spec.variables:
        arr = reference[v]
        has_level = "level" in arr.dims
        if has_level and spec.levels is not None:
            have = [float(x) for x in arr.level.values]
            absent = [lv for lv in spec.levels if lv not in have]
            if absent:
                raise InputError(f"the reference has no level(s) {absent} hPa of {v} (it has {have}); "
                                 "fix observations.levels")
            arr = arr.sel(level=[lv for lv in have if lv in spec.levels])
        dims = ("time", "level", *SPATIAL) if has_level else ("time", *SPATIAL)
        arr = arr.transpose(*dims)
        levels: list[float | None] = [float(x) for x in arr.level.values] if has_level else [None]
        data = arr.data if has_level else arr.data[:, None]
        std = spec.std(v)
        kw = dict(levels=levels, variable=v, std=std, seed=spec.seed, mask=mask,
                  ranks=grid_ranks(reference.latitude.values, reference.longitude.values))
        if isinstance(data, dsa.Array):
            data = data.rechunk({1: -1, 2: -1, 3: -1})
            times_da = dsa.from_array(times, chunks=(data.chunks[0],))

            def fn(block, tblock, **kw):
                return _observe_block(block, np.ravel(tblock), **kw)

            values = dsa.map_blocks(fn, data, times_da[:, None, None, None], dtype=data.dtype, **kw)
        else:
            values = _observe_block(np.asarray(data), times, **kw)
        values = values if has_level else values[:, 0]
        attrs = {**arr.attrs, "noise_std": std}
        out[v] = xr.DataArray(values, dims=dims, coords={d: arr[d] for d in dims}, attrs=attrs)
    ds = xr.Dataset(out)
    ds.attrs.update({"observation_spec": json.dumps(spec.to_dict()), "observed_points": int(mask.sum()),
                     "grid_points": int(mask.size)})
    return ds


def write_observations(obs: xr.Dataset, path: str | Path, time_chunk: int = 1) -> Path:
    """Write ``obs`` as Zarr 3 (chunks: ``time_chunk`` times by the whole grid), consolidated.

    Written by :func:`.atomic.write_atomic`, so a killed write never leaves a half store at ``path``.
    """
    obs = obs.chunk({"time": time_chunk, **{d: -1 for d in obs.dims if d != "time"}})
    encoding = {v: {"fill_value": np.nan} for v in obs.data_vars}
    for v in obs.data_vars:
        obs[v].encoding.pop("chunks", None)
    return write_atomic(obs, path, encoding)


def make_observations(reference_path: str | Path, out_path: str | Path,
                      spec: ObservationSpec | Mapping[str, Any] | None = None) -> Path:
    """Open ``reference_path`` (an ERA5-layout store), build the observations, write ``out_path``."""
    from .era5 import open_store

    spec = spec if isinstance(spec, ObservationSpec) or spec is None else ObservationSpec.from_dict(spec)
    ref = open_store(reference_path)
    return write_observations(build_observations(ref, spec), out_path)


def observed_levels(obs: xr.Dataset, variable: str) -> Sequence[float] | None:
    """The levels at which ``variable`` is observed (``None`` for single-level fields)."""
    arr = obs[variable]
    return [float(x) for x in arr.level.values] if "level" in arr.dims else None
