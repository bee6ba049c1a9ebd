"""make-data sphere: observation networks (obs_* keys) and the perfect-model twin (truth=emulator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data import sphere
from pipeline.errors import DiffdaError

pytest.importorskip("dinosaur")

BASE = {"spinup_days": sphere.SHIPPED_SPINUP, "seed": 3}


@pytest.mark.parametrize("bad, key", [
    ({"obs_variables": ["humidity"]}, "obs_variables"),
    ({"obs_variables": []}, "obs_variables"),
    ({"obs_levels": [300]}, "obs_levels"),
    ({"obs_stations": 0}, "obs_stations"),
    ({"obs_stride": 8, "obs_stations": 33}, "obs_stations"),  # 4 x 8 = 32 thinned points
    ({"obs_station_seed": -1}, "obs_station_seed"),
    ({"obs_std": 0}, "obs_std"),
    ({"obs_variables": ["temperature", "u_component_of_wind"], "obs_std": {"temperature": 1.0}}, "obs_std"),
    ({"truth": "perfect"}, "truth"),
    ({"sampler_steps": 0}, "sampler_steps"),
])
def test_network_keys_are_validated_by_name(bad, key):
    with pytest.raises(DiffdaError, match=key):
        sphere.sphere_params(bad)


def test_network_defaults_are_the_seed_network():
    p = sphere.sphere_params({})
    spec = sphere.observation_spec(p)
    assert spec.variables == ("temperature",) and spec.levels is None and spec.thinning == (2, 2)
    assert spec.stations is None and spec.std("temperature") == 1.0 and p["truth"] == "dinosaur"
    p = sphere.sphere_params({"obs_variables": "temperature, v_component_of_wind", "obs_std": 0.5})
    assert sphere.observation_spec(p).noise_std == {"temperature": 0.5, "v_component_of_wind": 0.5}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    sphere.make_sphere(root / "dino", {**BASE, "days": 2})
    net = {"obs_variables": ["temperature", "u_component_of_wind"], "obs_levels": [500, 850], "obs_stride": 4,
           "obs_stations": 50, "obs_std": {"temperature": 0.5, "u_component_of_wind": 2.0}}
    sphere.make_sphere(root / "emu", {**BASE, "days": 2, "truth": "emulator", "sampler_steps": 4, **net})
    return root


def test_observation_network(stores):
    import xarray as xr

    truth = xr.open_zarr(stores / "emu" / "truth.zarr")
    obs = xr.open_zarr(stores / "emu" / "observations.zarr")
    assert sorted(obs.data_vars) == ["temperature", "u_component_of_wind"]
    assert list(obs.level.values) == [500, 850]
    err = {}
    for v, std in (("temperature", 0.5), ("u_component_of_wind", 2.0)):
        y = obs[v].values  # [T, 2, 32, 64]
        seen = np.isfinite(y)
        assert (seen.sum(axis=(2, 3)) == 50).all()  # 50 stations at every time and level
        assert (seen == seen[:1, :1]).all()  # the same stations throughout
        rows, cols = np.nonzero(seen[0, 0])
        assert (rows % 4 == 0).all() and (cols % 4 == 0).all()  # on the thinned grid
        e = (y - truth[v].sel(level=[500, 850]).values[1:])[seen]
        err[v] = e.std()
        # 800 draws: the sample std is within ~2.5 % (one sigma) of the noise std
        assert abs(e.std() / std - 1) < 0.1 and abs(e.mean()) < 4 * std / np.sqrt(e.size)
        assert obs[v].attrs["noise_std"] == std


def test_station_seed_moves_the_stations_not_the_noise(stores):
    import xarray as xr

    from pipeline.data.observe import build_observations

    truth = xr.open_zarr(stores / "emu" / "truth.zarr").isel(time=slice(1, None))
    p = sphere.sphere_params({"obs_stations": 200})
    a = build_observations(truth, sphere.observation_spec(p)).temperature.values
    b = build_observations(truth, sphere.observation_spec({**p, "obs_station_seed": 1})).temperature.values
    ma, mb = np.isfinite(a), np.isfinite(b)
    assert ma.sum() == mb.sum() and (ma != mb).any()
    both = ma & mb
    np.testing.assert_array_equal(a[both], b[both])  # the noise is keyed by (seed, variable, level, time)


def test_emulator_truth_is_a_sampled_rollout(stores):
    """The first K states (K = the emulator's history) are the dinosaur states; state K is one draw of
    the filter's sampler conditioned on them."""
    import xarray as xr

    from pipeline.diffusion.sampler import Sampler
    from pipeline.models.neural import NeuralDenoiser
    from pipeline.models.weights import default_checkpoint

    den = NeuralDenoiser.from_checkpoint(default_checkpoint())
    k = den.history
    emu = xr.open_zarr(stores / "emu" / "truth.zarr")
    dino = xr.open_zarr(stores / "dino" / "truth.zarr")
    assert dict(emu.sizes) == dict(dino.sizes) and set(emu.data_vars) == set(dino.data_vars)
    assert emu.attrs["truth"] == "emulator" and emu.attrs["emulator_history"] == k
    for v in sphere.VARIABLES:
        assert emu[v].dims == dino[v].dims and emu[v].attrs["units"] == dino[v].attrs["units"]
        np.testing.assert_array_equal(emu[v].values[:k], dino[v].values[:k])
        assert np.isfinite(emu[v].values).all()
    chans = [(v, int(lv)) for v, lv in den.meta["channels"]]
    stack = lambda ds, i: np.stack([ds[v].sel(level=lv).values[i] for v, lv in chans])  # noqa: E731
    z = den.normalisation.normalise(torch.from_numpy(np.stack([stack(emu, i) for i in range(k)]).astype(np.float64))).float()
    gen = torch.Generator().manual_seed(3)
    shape = tuple(z.shape[1:])
    x = Sampler(den, steps=4).sample(z[None], lambda: torch.randn((1, *shape), generator=gen, dtype=torch.float64).float(), shape)
    want = den.normalisation.denormalise(x[0].detach().double()).numpy()
    got = stack(emu, k)
    scale = np.asarray(den.normalisation.std)[:, None, None]
    assert np.abs((got - want) / scale).max() < 1e-4  # float32 store, normalised units
    # a 6-hour step of the emulator moves the state by about its increment scale, not by noise of size 1
    step = np.sqrt(np.mean(((stack(emu, k) - stack(emu, k - 1)) / scale) ** 2))
    assert 0.05 < step < 0.5


def test_emulator_truth_needs_the_checkpoint_levels(tmp_path):
    with pytest.raises(DiffdaError, match="levels"):
        sphere.make_sphere(tmp_path / "x", {**BASE, "days": 1, "truth": "emulator", "levels": [500, 850]})
