"""Small ERA5-layout stores built in code for the data-plane tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

VARIABLES = ("temperature", "geopotential", "u_component_of_wind")
UNITS = {"temperature": "K", "geopotential": "m**2 s**-2", "u_component_of_wind": "m s**-1"}
OFFSET = {"temperature": 260.0, "geopotential": 5.0e4, "u_component_of_wind": 5.0}
SCALE = {"temperature": 10.0, "geopotential": 2.0e3, "u_component_of_wind": 8.0}


def era5_dataset(nt: int = 6, nlat: int = 8, nlon: int = 16, levels=(250, 500, 850), ascending: bool = True,
                 variables=VARIABLES, start: str = "2020-01-01", freq: str = "6h", seed: int = 0,
                 order: tuple[str, ...] = ("time", "level", "latitude", "longitude"),
                 surface: bool = False) -> xr.Dataset:
    """Smooth fields plus noise on a WeatherBench2-like grid (cell centres, no poles)."""
    rng = np.random.default_rng(seed)
    dlat = 180.0 / nlat
    lat = np.linspace(-90 + dlat / 2, 90 - dlat / 2, nlat)
    if not ascending:
        lat = lat[::-1]
    lon = np.arange(nlon) * 360.0 / nlon
    times = pd.date_range(start, periods=nt, freq=freq).values
    lv = np.asarray(levels, dtype=np.int64)
    data = {}
    phase = np.arange(nt)[:, None, None, None] * 0.3
    base = (np.cos(np.deg2rad(lat))[None, None, :, None] * np.sin(np.deg2rad(lon)[None, None, None, :] + phase)
            + 0.1 * np.log(lv.astype(float))[None, :, None, None])
    for i, v in enumerate(variables):
        x = OFFSET[v] + SCALE[v] * (base * (1 + 0.2 * i) + 0.1 * rng.standard_normal((nt, len(lv), nlat, nlon)))
        da = xr.DataArray(x.astype(np.float32), dims=("time", "level", "latitude", "longitude"),
                          attrs={"units": UNITS[v], "long_name": v.replace("_", " ")})
        data[v] = da.transpose(*order)
    if surface:
        x = 280.0 + 5.0 * base[:, 0] + rng.standard_normal((nt, nlat, nlon))
        data["2m_temperature"] = xr.DataArray(x.astype(np.float32), dims=("time", "latitude", "longitude"),
                                              attrs={"units": "K"})
    return xr.Dataset(data, coords={"time": times, "level": lv, "latitude": lat, "longitude": lon})


def write_store(ds: xr.Dataset, path: Path, attrs: dict | None = None) -> Path:
    ds = ds.copy()
    ds.attrs.update(attrs or {})
    ds.chunk({"time": 1}).to_zarr(path, mode="w", zarr_format=3, consolidated=True)
    return path
