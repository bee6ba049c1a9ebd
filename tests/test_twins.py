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
