"""The ERA5 reader: layouts by dimension name, lazy selection, regridding, statistics, errors."""

import numpy as np
import pytest
import torch

from era5_stores import era5_dataset, write_store
from pipeline.data.era5 import (Era5Reader, Statistics, check_grid, compute_statistics, open_store, select,
                                to_grid)
from pipeline.errors import InputError
from pipeline.models.normalisation import Normalisation


@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("order", [("time", "level", "latitude", "longitude"), ("time", "level", "longitude", "latitude")])
def test_both_latitude_orders_and_dim_orders(tmp_path, ascending, order):
    ds = era5_dataset(nt=4, ascending=ascending)
    path = write_store(ds.transpose(*order), tmp_path / "ref.zarr")
    reader = Era5Reader(path, variables=["temperature", "geopotential"], levels=[850, 250])
    assert reader.layout.channels == (("temperature", 850.0), ("temperature", 250.0),
                                      ("geopotential", 850.0), ("geopotential", 250.0))
    assert reader.layout.latitude == tuple(ds.latitude.values)  # stored order kept
    x = reader.read(2)
    assert x.shape == (4, 8, 16) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], ds.temperature.sel(level=250).isel(time=2).values)
    np.testing.assert_array_equal(reader.read(slice(1, 3))[:, 3], ds.geopotential.sel(level=250).isel(time=slice(1, 3)).values)
    assert isinstance(reader.ds.temperature.data, __import__("dask.array").array.Array)  # lazy


def test_open_by_fsspec_url_and_wrap_longitude(tmp_path):
    ds = era5_dataset(nt=2)
    ds = ds.assign_coords(longitude=(((ds.longitude + 180) % 360) - 180)).sortby("longitude")  # -180..180
    path = write_store(ds, tmp_path / "ref.zarr")
    got = open_store(f"file://{path}")
    assert got.longitude.values.min() >= 0 and np.all(np.diff(got.longitude.values) > 0)
    np.testing.assert_array_equal(got.temperature.sel(longitude=0.0).values, ds.temperature.sel(longitude=0.0).values)


def test_missing_variable_level_and_store_are_named(tmp_path):
    path = write_store(era5_dataset(nt=3), tmp_path / "ref.zarr")
    with pytest.raises(InputError, match="'specific_humidity'"):
        Era5Reader(path, variables=["temperature", "specific_humidity"])
    with pytest.raises(InputError, match="no level 700 hPa"):
        Era5Reader(path, levels=[500, 700])
    with pytest.raises(InputError, match="not found"):
        open_store(tmp_path / "nope.zarr")


def test_time_gap_is_named(tmp_path):
    ds = era5_dataset(nt=6)
    path = write_store(ds.isel(time=[0, 1, 2, 4, 5]), tmp_path / "gap.zarr")
    with pytest.raises(InputError, match=r"time gap: 2020-01-01T12:00 is followed by 2020-01-02T00:00 \(expected every 6 h\)"):
        Era5Reader(path)
    assert len(Era5Reader(path, stop="2020-01-01T12")) == 3  # a range without the gap is fine


def test_valid_time_range_clips_and_refuses_beyond(tmp_path):
    """ARCO-ERA5: the time axis runs past the data; the valid range is in the root attributes."""
    ds = era5_dataset(nt=8)
    path = write_store(ds, tmp_path / "arco.zarr", attrs={"valid_time_start": "2020-01-01",
                                                          "valid_time_stop": "2020-01-02T06:00:00"})
    reader = Era5Reader(path)
    assert len(reader) == 6
    with pytest.raises(InputError, match="stop 2020-01-02T12:00 is outside the data.*valid_time_stop"):
        Era5Reader(path, start="2020-01-01T06", stop="2020-01-02T12")


def test_other_grid_is_named(tmp_path):
    coarse = era5_dataset(nlat=4, nlon=8)
    fine = era5_dataset(nlat=8, nlon=16)
    with pytest.raises(InputError, match=r"grid 8x4 .* but the model grid is 16x8"):
        check_grid(coarse, fine.latitude.values, fine.longitude.values, "observations")
    with pytest.raises(InputError, match="latitude runs the other way"):
        check_grid(fine.isel(latitude=slice(None, None, -1)), fine.latitude.values, fine.longitude.values, "obs")


def test_to_grid_reorders_coarsens_and_interpolates():
    ds = era5_dataset(nt=2, nlat=16, nlon=32)
    desc = ds.latitude.values[::-1]
    np.testing.assert_array_equal(to_grid(ds, desc, ds.longitude.values).temperature.values,
                                  ds.temperature.values[:, :, ::-1])
    lat4, lon8 = ds.latitude.values.reshape(4, 4).mean(1), ds.longitude.values.reshape(8, 4).mean(1)
    coarse = to_grid(ds, lat4, lon8)
    expect = ds.temperature.values.reshape(2, 3, 4, 4, 8, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(coarse.temperature.values, expect, rtol=1e-6)
    # bilinear, periodic in longitude: a field linear in latitude is reproduced, across the seam too
    lin = ds.copy()
    lin["temperature"] = (ds.temperature * 0 + ds.latitude).transpose(*ds.temperature.dims)
    out = to_grid(lin.chunk({"time": 1}), np.array([-60.0, 1.0, 45.0]), np.array([0.0, 359.0, 100.0]))
    np.testing.assert_allclose(out.temperature.values[0, 0], np.array([[-60.0] * 3, [1.0] * 3, [45.0] * 3]), atol=1e-4)


def test_statistics_agree_with_normalisation_and_roundtrip(tmp_path):
    ds = era5_dataset(nt=6)
    stats = compute_statistics(select(ds.chunk({"time": 2})))
    reader = Era5Reader(ds, levels=[500, 250])
    norm = stats.normalisation(reader.layout)
    want = Normalisation.from_trajectory(torch.from_numpy(reader.read(slice(0, 6)).astype(np.float64)))
    np.testing.assert_allclose(norm.mean, want.mean, rtol=1e-6)
    np.testing.assert_allclose(norm.std, want.std, rtol=1e-2)  # population vs sample std over T*H*W points
    np.testing.assert_allclose(norm.residual_std, want.residual_std, rtol=2e-2)
    back = Statistics.load(stats.save(tmp_path / "statistics.json"))
    assert back.normalisation(reader.layout) == norm
    with pytest.raises(InputError, match="no level 700 hPa of temperature"):
        back.lookup("temperature", 700)


def test_read_trajectory_uses_the_reader(tmp_path):
    from pipeline.models.store import read_trajectory

    ds = era5_dataset(nt=4, ascending=False, order=("time", "level", "longitude", "latitude"))
    path = write_store(ds, tmp_path / "truth.zarr")
    x, layout = read_trajectory(tmp_path, variables=["temperature"], levels=[500])
    assert x.shape == (4, 1, 8, 16) and x.dtype == torch.float32
    assert layout.channels == (("temperature", 500.0),) and layout.latitude[0] > layout.latitude[-1]
    np.testing.assert_array_equal(x[:, 0].numpy(), ds.temperature.sel(level=500).transpose("time", "latitude", "longitude").values)
    bad = ds.copy(deep=True)
    bad["temperature"][0, 0, 0, 0] = np.nan
    write_store(bad, tmp_path / "nan.zarr")
    with pytest.raises(InputError, match="NaN"):
        read_trajectory(tmp_path / "nan.zarr")
