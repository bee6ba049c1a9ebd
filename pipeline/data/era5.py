r"""The ERA5 Zarr reader: open by path or fsspec URL, select lazily, regrid, normalise.

Layout (design §4): dims ``time, [level,] latitude, longitude`` in any stored order (the
WeatherBench2 1.5°/5.625° copies store ``(time, level, longitude, latitude)``): every variable is
transposed **by name** to ``(time, level, latitude, longitude)``; ERA5 long variable names; level
in hPa; latitude ascending or descending (kept as stored unless a target grid says otherwise);
longitude in 0..360 (a -180..180 store is wrapped and sorted). Common aliases (``lat``, ``lon``,
``pressure_level``, ``valid_time``) are renamed. ARCO-ERA5's time axis runs beyond its data: when
the root attributes ``valid_time_start``/``valid_time_stop`` exist the time axis is clipped to
them, and a request outside them is an error, not fill values.

Nothing here loads a whole store: :func:`open_store` and :func:`select` are lazy (dask), and
:class:`Era5Reader` reads one time step or a slice at a time, as ``[T, C, H, W]`` with channels
``(variable, level)`` in a fixed order (:class:`~pipeline.models.network_checkpoint.GridLayout`).

Statistics: :func:`compute_statistics` gives per-variable, per-level mean, standard deviation and
the standard deviation of one-step increments in normalised units (Dask, one pass over the
selection, on whatever Dask scheduler is active); :class:`Statistics` is stored as JSON by
``diffda prepare`` and turned into a :class:`~pipeline.models.normalisation.Normalisation` for a
channel layout.

Every problem raises :class:`~pipeline.errors.InputError` naming the variable, grid or time
and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .atomic import write_text
from ..models.network_checkpoint import GridLayout
from ..models.normalisation import Normalisation

ALIASES = {"lat": "latitude", "lon": "longitude", "pressure_level": "level", "isobaricInhPa": "level",
           "valid_time": "time"}
CANONICAL = ("time", "level", "latitude", "longitude")

#: CF attributes of the ERA5 variables we know (units, long_name, standard_name).
CF_ATTRS: dict[str, dict[str, str]] = {
    "temperature": {"units": "K", "long_name": "Temperature", "standard_name": "air_temperature"},
    "geopotential": {"units": "m**2 s**-2", "long_name": "Geopotential", "standard_name": "geopotential"},
    "u_component_of_wind": {"units": "m s**-1", "long_name": "U component of wind", "standard_name": "eastward_wind"},
    "v_component_of_wind": {"units": "m s**-1", "long_name": "V component of wind", "standard_name": "northward_wind"},
    "specific_humidity": {"units": "kg kg**-1", "long_name": "Specific humidity", "standard_name": "specific_humidity"},
    "vertical_velocity": {"units": "Pa s**-1", "long_name": "Vertical velocity", "standard_name": "lagrangian_tendency_of_air_pressure"},
    "2m_temperature": {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"},
    "mean_sea_level_pressure": {"units": "Pa", "long_name": "Mean sea level pressure", "standard_name": "air_pressure_at_mean_sea_level"},
    "10m_u_component_of_wind": {"units": "m s**-1", "long_name": "10 metre U wind component", "standard_name": "eastward_wind"},
    "10m_v_component_of_wind": {"units": "m s**-1", "long_name": "10 metre V wind component", "standard_name": "northward_wind"},
    "surface_pressure": {"units": "Pa", "long_name": "Surface pressure", "standard_name": "surface_air_pressure"},
}
COORD_ATTRS: dict[str, dict[str, str]] = {
    "latitude": {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude", "axis": "Y"},
    "longitude": {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude", "axis": "X"},
    "level": {"units": "hPa", "long_name": "pressure level", "standard_name": "air_pressure", "positive": "down", "axis": "Z"},
    "time": {"long_name": "time", "standard_name": "time", "axis": "T"},
    "member": {"long_name": "ensemble member"},
}


def cf_attrs(variable: str, existing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CF attributes for ``variable``: the known ones, overridden by what the store says."""
    base = variable.removesuffix("_spread").removesuffix("_members")
    out = dict(CF_ATTRS.get(base, {}))
    out.update({k: v for k, v in dict(existing or {}).items() if k in ("units", "long_name", "standard_name")})
    if variable.endswith("_spread"):
        out.pop("standard_name", None)
        out["long_name"] = f"ensemble spread of {out.get('long_name', base)}"
    elif variable.endswith("_members"):
        out["long_name"] = f"ensemble members of {out.get('long_name', base)}"
    return out


def is_url(source: str | Path) -> bool:
    return "://" in str(source)


# ----------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------
def open_store(source: str | Path, storage_options: Mapping[str, Any] | None = None, *,
               what: str = "store") -> xr.Dataset:
    """Open an ERA5-layout Zarr store lazily and put it into the canonical layout.

    ``source``: a local path or an fsspec URL (``gs://...``, ``s3://...``, ``file://...``, any
    protocol fsspec knows; ``storage_options`` go to it). Aliased dims are renamed, longitudes
    wrapped to 0..360, the time axis clipped to ``valid_time_start``/``valid_time_stop``.
    """
    label = what if str(source) in what else f"{what} {source}"
    if not is_url(source) and not Path(source).exists():
        raise InputError(f"{label} not found; give the path or URL of an ERA5-layout Zarr store "
                         "(data.store=..., or make one: `diffda make-data sphere --out DIR`)")
    try:
        ds = xr.open_zarr(str(source), chunks={}, storage_options=dict(storage_options or {}) or None,
                          decode_timedelta=False)
    except Exception as err:  # noqa: BLE001 - any open failure is an input problem
        raise InputError(f"cannot open {label} as Zarr: {type(err).__name__}: {err}") from None
    return canonical(ds, name=str(source))


def canonical(ds: xr.Dataset, name: str = "store") -> xr.Dataset:
    """Rename aliases, check the dims, wrap longitude, clip to the valid time range (lazy)."""
    ds = ds.rename({k: v for k, v in ALIASES.items()
                    if (k in ds.dims or k in ds.coords) and v not in ds.dims and v not in ds.coords})
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.dims:
            raise InputError(f"{name} has no '{dim}' dimension (dims: {', '.join(map(str, ds.dims)) or 'none'}); "
                             "expected the ERA5 layout (time, level, latitude, longitude)")
    lon = ds.longitude.values.astype(float)
    if (lon < 0).any() or (lon >= 360).any():
        ds = ds.assign_coords(longitude=np.mod(lon, 360.0)).sortby("longitude")
    if "level" in ds.coords:
        ds = ds.assign_coords(level=ds.level.values.astype(float))
    start, stop = ds.attrs.get("valid_time_start"), ds.attrs.get("valid_time_stop")
    if start is not None or stop is not None:
        ds = ds.sel(time=slice(_time(start) if start else None, _time(stop) if stop else None))
        ds.attrs["clipped_to_valid_time"] = 1
    ds.attrs.setdefault("source", name)
    return ds


def _time(t: Any) -> np.datetime64:
    try:
        return np.datetime64(str(t).replace("Z", "")) if not isinstance(t, np.datetime64) else t
    except ValueError:
        raise InputError(f"cannot read {t!r} as a time; use ISO 8601, e.g. 2020-01-01T06") from None


def fmt_time(t: Any) -> str:
    """A time as ``YYYY-MM-DDTHH:MM`` (minutes) for messages; anything not a datetime as ``str``."""
    return str(np.datetime_as_string(np.datetime64(t, "m"))) if np.issubdtype(np.asarray(t).dtype, np.datetime64) else str(t)


def _fmt_level(lv: float) -> str:
    return f"{int(lv)}" if float(lv).is_integer() else f"{lv:g}"


# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------
def gridded_variables(ds: xr.Dataset) -> list[str]:
    return [str(v) for v in ds.data_vars if {"time", "latitude", "longitude"} <= set(ds[v].dims)]


def select(ds: xr.Dataset, variables: Sequence[str] | None = None, levels: Sequence[float] | None = None,
           start: Any = None, stop: Any = None, *, name: str | None = None, check_gaps: bool = True) -> xr.Dataset:
    """Variables, levels and the time range ``[start, stop]`` (inclusive), transposed to
    ``(time, [level,] latitude, longitude)``; lazy. Errors name what is missing."""
    name = name or str(ds.attrs.get("source", "store"))
    have = gridded_variables(ds)
    names = list(variables) if variables is not None else have
    missing = [v for v in names if v not in have]
    if missing:
        raise InputError(f"{name} has no variable {', '.join(repr(v) for v in missing)}; it has "
                         f"{', '.join(have) or 'none'}; select variables it has or use another store")
    ds = ds[names]
    if levels is not None:
        if "level" not in ds.dims:
            raise InputError(f"{name} has no 'level' dimension but levels {list(levels)} were requested")
        have_lv = [float(x) for x in ds.level.values]
        want = [float(lv) for lv in levels]
        absent = [lv for lv in want if not np.isclose(have_lv, lv).any()]
        if absent:
            raise InputError(f"{name} has no level {', '.join(_fmt_level(x) for x in absent)} hPa; it has "
                             f"{', '.join(_fmt_level(x) for x in have_lv)} hPa")
        ds = ds.sel(level=want)
    ds = _select_time(ds, start, stop, name)
    if check_gaps:
        check_time_steps(ds.time.values, name)
    out = {}
    for v in names:
        dims = [d for d in CANONICAL if d in ds[v].dims]
        extra = [d for d in ds[v].dims if d not in CANONICAL]
        if extra:
            raise InputError(f"{name}: variable {v!r} has dims {ds[v].dims}; only time, level, latitude, "
                             f"longitude are understood (extra: {', '.join(map(str, extra))})")
        out[v] = ds[v].transpose(*dims)
    return xr.Dataset(out, attrs=ds.attrs)


def _select_time(ds: xr.Dataset, start: Any, stop: Any, name: str) -> xr.Dataset:
    times = ds.time.values
    if len(times) == 0:
        raise InputError(f"{name} holds no times (after clipping to its valid range)")
    lo, hi = times[0], times[-1]
    if start is not None:
        s = _time(start) if np.issubdtype(times.dtype, np.datetime64) else start
        if s < lo or s > hi:
            raise InputError(f"{name}: requested start {fmt_time(s)} is outside the data, which runs "
                             f"{fmt_time(lo)} .. {fmt_time(hi)}; choose a start in that range")
    if stop is not None:
        e = _time(stop) if np.issubdtype(times.dtype, np.datetime64) else stop
        if e > hi or e < lo:
            raise InputError(f"{name}: requested stop {fmt_time(e)} is outside the data, which runs "
                             f"{fmt_time(lo)} .. {fmt_time(hi)}"
                             + (" (valid_time_stop)" if ds.attrs.get("clipped_to_valid_time") else "")
                             + "; choose a stop in that range")
    if start is None and stop is None:
        return ds
    return ds.sel(time=slice(_time(start) if start is not None and np.issubdtype(times.dtype, np.datetime64) else start,
                             _time(stop) if stop is not None and np.issubdtype(times.dtype, np.datetime64) else stop))


def check_time_steps(times: np.ndarray, name: str = "store", step: Any = None) -> Any:
    """Raise unless ``times`` are increasing with one constant step (returns the step)."""
    if len(times) < 2:
        return step
    d = np.diff(times)
    step = d[0] if step is None else step
    bad = np.flatnonzero(d != step)
    if bad.size:
        i = int(bad[0])
        what = "a time gap" if d[i] > step else "an irregular time step"
        raise InputError(f"{name} has {what}: {fmt_time(times[i])} is followed by {fmt_time(times[i + 1])} "
                         f"(expected every {_fmt_step(step)}); fill the gap or choose a time range without it")
    return step


def _fmt_step(step: Any) -> str:
    if isinstance(step, np.timedelta64):
        hours = step / np.timedelta64(1, "h")
        return f"{hours:g} h"
    return str(step)


def layout_of(ds: xr.Dataset, variables: Sequence[str] | None = None) -> GridLayout:
    """Channels ``(variable, level)`` in variable order then stored level order; the grid."""
    channels: list[tuple[str, float | None]] = []
    for v in variables or list(ds.data_vars):
        if "level" in ds[v].dims:
            channels += [(str(v), float(lv)) for lv in ds[v].level.values]
        else:
            channels.append((str(v), None))
    return GridLayout(tuple(channels), tuple(float(x) for x in ds.latitude.values),
                      tuple(float(x) for x in ds.longitude.values), dict(ds.attrs))


def grid_description(latitude: Sequence[float], longitude: Sequence[float]) -> str:
    lat, lon = np.asarray(latitude, float), np.asarray(longitude, float)
    return (f"{len(lon)}x{len(lat)} (latitude {lat[0]:g} .. {lat[-1]:g}, longitude {lon[0]:g} .. {lon[-1]:g})"
            if lat.size and lon.size else "empty")


def check_grid(ds: xr.Dataset, latitude: Sequence[float], longitude: Sequence[float], name: str,
               reference: str = "the model grid", tol: float = 1e-4) -> None:
    """Raise unless ``ds`` is on exactly this grid (same order)."""
    lat, lon = ds.latitude.values.astype(float), ds.longitude.values.astype(float)
    same = (lat.shape == np.shape(latitude) and lon.shape == np.shape(longitude)
            and np.allclose(lat, latitude, atol=tol) and np.allclose(lon, longitude, atol=tol))
    if not same:
        hint = ("latitude runs the other way; it is reordered when read through to_grid"
                if lat.shape == np.shape(latitude) and np.allclose(lat[::-1], latitude, atol=tol)
                else "regrid it with `diffda prepare ... --grid` or read it through to_grid")
        raise InputError(f"{name} is on grid {grid_description(lat, lon)} but {reference} is "
                         f"{grid_description(latitude, longitude)}; {hint}")


# ----------------------------------------------------------------------------------------------
# Regridding
# ----------------------------------------------------------------------------------------------
def to_grid(ds: xr.Dataset, latitude: Sequence[float], longitude: Sequence[float], tol: float = 1e-4) -> xr.Dataset:
    """``ds`` on the target grid (lazy): reordered if it is the same grid, block-averaged when the
    target is an integer coarsening of it, else bilinear (periodic in longitude)."""
    lat_t, lon_t = np.asarray(latitude, float), np.asarray(longitude, float)
    lat, lon = ds.latitude.values.astype(float), ds.longitude.values.astype(float)
    if _same_set(lat, lat_t, tol) and _same_set(lon, lon_t, tol):
        return ds.reindex(latitude=lat_t, longitude=lon_t, method="nearest", tolerance=tol)
    fy, fx = len(lat) // max(len(lat_t), 1), len(lon) // max(len(lon_t), 1)
    if fy >= 1 and fx >= 1 and len(lat) == fy * len(lat_t) and len(lon) == fx * len(lon_t):
        srt = ds.sortby("latitude").sortby("longitude")
        coarse = srt.coarsen(latitude=fy, longitude=fx, boundary="exact").mean()
        if _same_set(coarse.latitude.values, lat_t, 1e-3) and _same_set(coarse.longitude.values, lon_t, 1e-3):
            coarse = coarse.assign_coords(latitude=np.sort(lat_t), longitude=np.sort(lon_t))
            return coarse.reindex(latitude=lat_t, longitude=lon_t)
    srt = ds.sortby("latitude").sortby("longitude")
    wrapped = xr.concat([srt.isel(longitude=[-1]).assign_coords(longitude=srt.longitude[-1:] - 360.0), srt,
                         srt.isel(longitude=[0]).assign_coords(longitude=srt.longitude[:1] + 360.0)], dim="longitude")
    wrapped = wrapped.chunk({"latitude": -1, "longitude": -1}) if any(
        hasattr(wrapped[v].data, "dask") for v in wrapped.data_vars) else wrapped
    out = wrapped.interp(latitude=lat_t, longitude=lon_t, method="linear", kwargs={"fill_value": "extrapolate"})
    out.attrs.update(ds.attrs)
    for v in out.data_vars:
        out[v].attrs.update(ds[v].attrs)
    return out


def _same_set(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    return a.shape == b.shape and np.allclose(a, b, atol=tol)


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
STATS_FORMAT = "diffda-statistics/1"


@dataclass
class Statistics:
    """Per variable, per level: ``mean``, ``std`` (physical units) and ``residual_std`` (the std of
    one-step increments of the normalised field). ``levels[v]`` is ``None`` for single-level fields."""

    levels: dict[str, list[float] | None]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]
    residual_std: dict[str, list[float]]
    attrs: dict[str, Any] = field(default_factory=dict)

    def lookup(self, variable: str, level: float | None) -> tuple[float, float, float]:
        if variable not in self.levels:
            raise InputError(f"the statistics have no variable {variable!r} (they have {', '.join(self.levels)}); "
                             "rerun `diffda prepare` with it")
        lv = self.levels[variable]
        if lv is None or level is None:
            i = 0
        else:
            hits = np.flatnonzero(np.isclose(lv, float(level)))
            if not hits.size:
                raise InputError(f"the statistics have no level {_fmt_level(level)} hPa of {variable} "
                                 f"(they have {', '.join(map(_fmt_level, lv))}); rerun `diffda prepare` with it")
            i = int(hits[0])
        return self.mean[variable][i], self.std[variable][i], self.residual_std[variable][i]

    def normalisation(self, layout: GridLayout) -> Normalisation:
        """A :class:`Normalisation` in ``layout``'s channel order."""
        vals = [self.lookup(v, lv) for v, lv in layout.channels]
        return Normalisation(tuple(m for m, _, _ in vals), tuple(max(s, 1e-12) for _, s, _ in vals),
                             tuple(max(r, 1e-6) for _, _, r in vals))

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATS_FORMAT, "attrs": self.attrs,
                "variables": {v: {"levels": self.levels[v], "mean": self.mean[v], "std": self.std[v],
                                  "residual_std": self.residual_std[v]} for v in self.levels}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Statistics":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"statistics file {path} not found; compute it with `diffda prepare --data {path.parent}`")
        d = json.loads(path.read_text())
        if d.get("format") != STATS_FORMAT:
            raise InputError(f"{path}: format {d.get('format')!r}, expected {STATS_FORMAT!r}; rerun `diffda prepare`")
        vs = d["variables"]
        return cls({v: vs[v]["levels"] for v in vs}, {v: vs[v]["mean"] for v in vs}, {v: vs[v]["std"] for v in vs},
                   {v: vs[v]["residual_std"] for v in vs}, d.get("attrs", {}))


def compute_statistics(ds: xr.Dataset) -> Statistics:
    """Statistics of a selection (:func:`select`'s output) over time, latitude and longitude.

    One ``dask.compute`` for everything, on the active scheduler (a distributed Client if one is
    set up). Unweighted grid means, as :meth:`Normalisation.from_trajectory` (so the two agree).
    """
    import dask

    spatial = ("time", "latitude", "longitude")
    lazy: dict[str, tuple] = {}
    for v in ds.data_vars:
        x = ds[v].astype("float64")
        mean = x.mean(spatial)
        std = x.std(spatial)
        inc = x.diff("time").std(spatial) if ds.sizes["time"] > 1 else xr.ones_like(std)
        lazy[str(v)] = (mean.data, std.data, inc.data)
    (computed,) = dask.compute(lazy)
    levels, mean, std, res = {}, {}, {}, {}
    for v, (m, s, r) in computed.items():
        m, s, r = np.atleast_1d(m), np.atleast_1d(s), np.atleast_1d(r)
        levels[v] = [float(x) for x in ds[v].level.values] if "level" in ds[v].dims else None
        s_safe = np.where(s > 0, s, 1.0)
        mean[v], std[v], res[v] = m.tolist(), s.tolist(), (r / s_safe).tolist()
        bad = [i for i in range(len(s)) if not np.isfinite(s[i]) or not np.isfinite(m[i])]
        if bad:
            where = ", ".join(_fmt_level(levels[v][i]) + " hPa" for i in bad) if levels[v] else "all points"
            raise InputError(f"{v} holds NaNs or infinities at {where}; select other levels or fix the store")
    t = ds.time.values
    attrs = {"time_start": fmt_time(t[0]), "time_stop": fmt_time(t[-1]), "times": int(len(t)),
             "grid": grid_description(ds.latitude.values, ds.longitude.values),
             "source": str(ds.attrs.get("source", ""))}
    return Statistics(levels, mean, std, res, attrs)


# ----------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------
class Era5Reader:
    """A lazy selection of an ERA5-layout store read as ``[T, C, H, W]`` time slices.

    ``source``: path/URL or an already opened dataset. ``grid``: optional ``(latitude,
    longitude)`` target (regridded lazily through :func:`to_grid`). ``layout.channels`` fixes the
    channel order: variables in the order given, levels in the order given (else stored).
    """

    def __init__(self, source: str | Path | xr.Dataset, variables: Sequence[str] | None = None,
                 levels: Sequence[float] | None = None, start: Any = None, stop: Any = None,
                 grid: tuple[Sequence[float], Sequence[float]] | None = None,
                 storage_options: Mapping[str, Any] | None = None, name: str | None = None,
                 check_gaps: bool = True, dtype: Any = np.float32):
        ds = source if isinstance(source, xr.Dataset) else open_store(source, storage_options, what=name or "store")
        self.name = name or str(ds.attrs.get("source", source if not isinstance(source, xr.Dataset) else "store"))
        ds = select(ds, variables, levels, start, stop, name=self.name, check_gaps=check_gaps)
        if grid is not None:
            ds = to_grid(ds, *grid)
        self.ds = ds
        self.variables = list(ds.data_vars)
        self.layout = layout_of(ds, self.variables)
        self.dtype = dtype

    @property
    def times(self) -> np.ndarray:
        return self.ds.time.values

    def __len__(self) -> int:
        return int(self.ds.sizes["time"])

    def index_of(self, time: Any) -> int:
        hits = np.flatnonzero(self.times == time)
        if not hits.size:
            raise InputError(f"{self.name} has no time {fmt_time(time)} (it runs {fmt_time(self.times[0])} .. "
                             f"{fmt_time(self.times[-1])}); a time gap or a window beyond the data")
        return int(hits[0])

    def read(self, index: int | slice) -> np.ndarray:
        """``[C, H, W]`` for one time index, ``[T, C, H, W]`` for a slice (one dask compute)."""
        sl = slice(index, index + 1) if isinstance(index, (int, np.integer)) else index
        part = self.ds.isel(time=sl).compute()
        arrays = []
        for v in self.variables:
            a = np.asarray(part[v].values, dtype=self.dtype)
            arrays.append(a if "level" in part[v].dims else a[:, None])
        out = np.concatenate(arrays, axis=1)
        return out[0] if isinstance(index, (int, np.integer)) else out
