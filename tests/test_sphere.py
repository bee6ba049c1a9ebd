"""The sphere preset: Held–Suarez on dinosaur, written in the WeatherBench2 64x32 layout."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import sphere
from pipeline.errors import DiffdaError

pytest.importorskip("dinosaur")


def test_params_validate():
    p = sphere.sphere_params({"levels": "[850, 250,500]", "days": 3})
    assert p["levels"] == [250, 500, 850] and p["days"] == 3
    for bad in ({"dayz": 1}, {"days": 0}, {"dt_minutes": 7}, {"levels": []}, {"init": "cold"}, {"obs_std": 0}):
        with pytest.raises(DiffdaError):
            sphere.sphere_params(bad)


def test_pressure_interpolation_is_linear_in_log_p():
    sigma = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    ps = np.full((2, 3), 1.0e5)
    ps[0, 0] = 0.95e5
    f = {name: (3.0 + 2.0 * np.log(sigma))[:, None, None] * np.ones((5, 2, 3)) + np.log(ps)[None] * 2.0
         for name in sphere.VARIABLES}  # exactly linear in ln p = ln sigma + ln ps
    f["surface_pressure"] = ps
    out = sphere.to_pressure_levels(f, sigma, [250, 500, 850])
    want = 3.0 + 2.0 * np.log(np.array([250, 500, 850]) * 100.0)
    for name in sphere.VARIABLES:
        assert out[name].shape == (3, 3, 2)  # [P, lat, lon]
        np.testing.assert_allclose(out[name], np.broadcast_to(want[:, None, None], (3, 3, 2)), rtol=1e-5)
    out = sphere.to_pressure_levels(f, sigma, [50, 950])
    assert np.isnan(out["temperature"]).all()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("sphere")
    # the shipped spun-up state with no extra spin-up: ~10 s, most of it JAX compilation
    sphere.make_sphere(out, {"days": 2, "spinup_days": sphere.SHIPPED_SPINUP, "seed": 3})
    return out


def test_truth_layout(store):
    import xarray as xr

    ds = xr.open_zarr(store / "truth.zarr")
    assert set(ds.data_vars) == set(sphere.VARIABLES)
    assert dict(ds.sizes) == {"time": 9, "level": 3, "latitude": 32, "longitude": 64}
    assert list(ds.level.values) == [250, 500, 850] and ds.level.dtype.kind == "i"
    np.testing.assert_allclose(ds.latitude.values, -87.1875 + 5.625 * np.arange(32))
    np.testing.assert_allclose(ds.longitude.values, 5.625 * np.arange(64))
    assert (np.diff(ds.time.values) == np.timedelta64(6, "h")).all()
    assert str(ds.time.values[0])[:13] == "2000-01-01T00"
    units = {"temperature": "K", "geopotential": "m**2 s**-2", "u_component_of_wind": "m s**-1",
             "v_component_of_wind": "m s**-1"}
    for name, u in units.items():
        da = ds[name]
        assert da.dims == ("time", "level", "latitude", "longitude")
        assert da.attrs["units"] == u and da.attrs["long_name"] and da.attrs["standard_name"]
        assert da.dtype == np.float32
        assert np.isfinite(da.values).all()
    t = ds.temperature.values
    assert 180 < t.min() and t.max() < 320
    # warm equator, cold poles at 850 hPa; geopotential increases upwards; westerly jets aloft
    t850 = ds.temperature.sel(level=850).mean(("time", "longitude")).values
    assert t850[15] > t850[0] + 15 and t850[16] > t850[31] + 15
    z = ds.geopotential.mean(("time", "latitude", "longitude")).values
    assert z[0] > z[1] > z[2] > 0
    u250 = ds.u_component_of_wind.sel(level=250).mean(("time", "longitude")).values
    assert u250.max() > 15
    assert ds.attrs["seed"] == 3 and ds.attrs["spinup_days"] == sphere.SHIPPED_SPINUP and "dinosaur" in ds.attrs["model"]


def test_observations(store):
    import xarray as xr

    truth = xr.open_zarr(store / "truth.zarr")
    obs = xr.open_zarr(store / "observations.zarr")
    assert list(obs.data_vars) == ["temperature"]
    assert obs.sizes["time"] == truth.sizes["time"] - 1
    np.testing.assert_array_equal(obs.time.values, truth.time.values[1:])
    y = obs.temperature.values
    seen = np.isfinite(y)
    assert seen.mean() == pytest.approx(0.25)
    err = (y - truth.temperature.values[1:])[seen]
    assert abs(err.std() - 1.0) < 0.1 and abs(err.mean()) < 0.1


def test_level_outside_the_model_refused(tmp_path):
    with pytest.raises(DiffdaError, match="levels"):
        sphere.make_sphere(tmp_path / "x", {"days": 1, "spinup_days": sphere.SHIPPED_SPINUP, "levels": [50, 500]})
