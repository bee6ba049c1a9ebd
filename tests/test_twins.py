"""Twin stores: layout, attributes, NaN pattern, and the dynamics' noise statistics."""

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.data.twins import make_twin
from pipeline.errors import DiffdaError
from pipeline.models.dynamics import Linear


def test_linear_twin_store(tmp_path):
    make_twin("linear", tmp_path, {"dim": 12, "cycles": 400, "seed": 3})
    truth = xr.open_zarr(tmp_path / "truth.zarr")
    obs = xr.open_zarr(tmp_path / "observations.zarr")
    assert {k: truth.attrs[k] for k in ("dim", "a", "c", "q", "r", "stride")} == dict(dim=12, a=0.95, c=0.25, q=0.1, r=0.25, stride=2)
    assert truth.x.shape == (401, 12) and obs.x.shape == (400, 12)
    y = obs.x.values
    assert np.isnan(y[:, 1::2]).all() and np.isfinite(y[:, ::2]).all()
    x = torch.from_numpy(truth.x.values)
    resid = (x[1:] - Linear(0.95, 0.25)(x[:-1])).numpy()
    # residuals ~ N(0, q): sample variance of n = 4800 values has relative SE sqrt(2/n) = 2 %;
    # allow 5 SE.
    assert abs(resid.var() / 0.1 - 1) < 5 * np.sqrt(2 / resid.size)
    innov = y[:, ::2] - truth.x.values[1:, ::2]
    assert abs(innov.var() / 0.25 - 1) < 5 * np.sqrt(2 / innov.size)


@pytest.mark.parametrize("preset,dim", [("lorenz96", 40), ("lorenz63", 3)])
def test_lorenz_presets(tmp_path, preset, dim):
    make_twin(preset, tmp_path, {"cycles": 5, "operator": "arctan"})
    obs = xr.open_zarr(tmp_path / "observations.zarr")
    assert obs.x.shape == (5, dim) and obs.attrs["operator"] == "arctan"
    assert np.all(np.abs(obs.x.values) < np.pi / 2 + 6 * np.sqrt(obs.attrs["r"]))


def test_bad_keys_named(tmp_path):
    with pytest.raises(DiffdaError, match="unknown key 'dimm'"):
        make_twin("linear", tmp_path, {"dimm": 3})
    with pytest.raises(DiffdaError, match="operator"):
        make_twin("lorenz96", tmp_path, {"operator": "cube"})
    with pytest.raises(DiffdaError, match="r must be"):
        make_twin("lorenz63", tmp_path, {"r": 0})
    assert not (tmp_path / "truth.zarr").exists()


@pytest.mark.parametrize("preset,steps,dt", [("lorenz63", 10, 0.01), ("lorenz96", 2, 0.05)])
def test_steps_key_sets_rk4_steps_per_cycle(tmp_path, preset, steps, dt):
    """``steps`` RK4 steps of ``dt`` per cycle (0.1 time units here): with q = 0 the truth is exactly the
    map iterated, and the store records the key so a run rebuilds the same dynamics."""
    from pipeline.data.twins import dynamics_for, twin_params
    from pipeline.models.dynamics import rk4

    make_twin(preset, tmp_path, {"cycles": 4, "steps": steps, "q": 0.0})
    truth = xr.open_zarr(tmp_path / "truth.zarr")
    assert truth.attrs["steps"] == steps
    x = torch.from_numpy(truth.x.values)
    m = dynamics_for(preset, twin_params(preset, {"steps": steps}))
    torch.testing.assert_close(m(x[:-1]), x[1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(m(x[:1]), rk4(m.tendency, x[:1], dt, steps), rtol=0, atol=0)
    with pytest.raises(DiffdaError, match="steps must be a positive integer"):
        make_twin(preset, tmp_path / "bad", {"steps": 0})


def test_components_key_observes_the_listed_components(tmp_path):
    make_twin("lorenz63", tmp_path, {"cycles": 3, "components": [2]})
    y = xr.open_zarr(tmp_path / "observations.zarr").x.values
    assert np.isnan(y[:, :2]).all() and np.isfinite(y[:, 2]).all()
    with pytest.raises(DiffdaError, match="components must be"):
        make_twin("lorenz63", tmp_path / "bad", {"components": [3]})
