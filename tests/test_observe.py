"""Observations from a reference: mask, noise, NaN elsewhere; reproducible whatever the chunking."""

import json

import numpy as np
import pytest
import torch

from era5_stores import era5_dataset
from pipeline.data.observe import (ObservationSpec, build_observations, make_observations, observation_mask,
                                   write_observations)
from pipeline.data.era5 import open_store
from pipeline.diffusion.observation import Observation
from pipeline.errors import InputError


def test_default_spec_thins_temperature_with_unit_noise():
    ref = era5_dataset(nt=4, nlat=16, nlon=32)
    obs = build_observations(ref)
    assert list(obs.data_vars) == ["temperature"] and obs.temperature.dims == ("time", "level", "latitude", "longitude")
    y = obs.temperature.values
    assert np.isfinite(y).mean() == pytest.approx(0.25)  # every 2nd point in lat and lon
    assert np.isfinite(y[:, :, ::2, ::2]).all() and np.isnan(y[:, :, 1::2, :]).all()
    resid = (y - ref.temperature.values)[np.isfinite(y)]
    assert abs(resid.std() - 1.0) < 0.1 and abs(resid.mean()) < 0.1
    assert obs.temperature.attrs["noise_std"] == 1.0
    assert json.loads(obs.attrs["observation_spec"])["seed"] == 0


def test_lazy_equals_eager_and_subsets_reproduce():
    ref = era5_dataset(nt=5)
    eager = build_observations(ref, ObservationSpec(noise_std={"temperature": 0.5}))
    lazy = build_observations(ref.chunk({"time": 2}), ObservationSpec(noise_std={"temperature": 0.5}))
    np.testing.assert_array_equal(eager.temperature.values, lazy.temperature.values)
    # the noise of a (variable, level, time) does not depend on which times or levels are built together
    part = build_observations(ref.isel(time=slice(2, 4)), ObservationSpec(levels=(500,), noise_std={"temperature": 0.5}))
    np.testing.assert_array_equal(part.temperature.values[:, 0], eager.temperature.sel(level=500).values[2:4])


def test_latitude_order_does_not_change_what_is_observed():
    ref = era5_dataset(nlat=8, ascending=True)
    asc = build_observations(ref)
    desc = build_observations(ref.isel(latitude=slice(None, None, -1)))
    np.testing.assert_array_equal(asc.temperature.values, desc.temperature.sortby("latitude").values)


def test_station_mask_and_several_variables(tmp_path):
    ref = era5_dataset(nlat=8, nlon=16, surface=True)
    spec = ObservationSpec(variables=("temperature", "2m_temperature"), thinning=1, stations=10, seed=3,
                           noise_std={"temperature": 1.0, "2m_temperature": 0.3})
    obs = build_observations(ref, spec)
    assert np.isfinite(obs["2m_temperature"].values[0]).sum() == 10
    m = np.isfinite(obs.temperature.values)
    assert (m == m[:1, :1]).all()  # stations do not move between times or levels
    assert obs["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert (observation_mask(ref.latitude.values, ref.longitude.values, spec) == m[0, 0]).all()
    write_observations(obs, tmp_path / "obs.zarr")
    back = open_store(tmp_path / "obs.zarr")
    np.testing.assert_array_equal(back.temperature.values, obs.temperature.values)
    assert back["2m_temperature"].attrs["noise_std"] == 0.3


def test_make_observations_from_path(tmp_path):
    era5_dataset(nt=3).chunk({"time": 1}).to_zarr(tmp_path / "ref.zarr", zarr_format=3)
    make_observations(tmp_path / "ref.zarr", tmp_path / "obs.zarr", {"thinning": [1, 4], "seed": 1})
    y = open_store(tmp_path / "obs.zarr").temperature.values
    assert np.isfinite(y).mean() == pytest.approx(0.25)


def test_errors_name_the_problem():
    ref = era5_dataset()
    with pytest.raises(InputError, match="specific_humidity"):
        build_observations(ref, ObservationSpec(variables=("specific_humidity",)))
    with pytest.raises(InputError, match="700"):
        build_observations(ref, ObservationSpec(levels=(700,)))
    with pytest.raises(InputError, match="thinnig"):
        ObservationSpec.from_dict({"thinnig": 2})


def test_nan_observations_contribute_nothing():
    """A NaN entry is dropped: the likelihood does not depend on the state there."""
    y = torch.tensor([[1.0, float("nan")], [float("nan"), -2.0]], dtype=torch.float64)
    obs = Observation.from_field(y, 0.5)
    assert obs.size == 2
    x = torch.randn(3, 2, 2, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 0, 1] += 100.0
    x2[:, 1, 0] -= 7.0
    torch.testing.assert_close(obs.log_likelihood(obs.operator(x)), obs.log_likelihood(obs.operator(x2)))
