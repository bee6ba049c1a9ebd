"""``filter.init_climatology`` on twins: the initial ensemble drawn from another run of the same chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.problems import load_twin
from pipeline.run import assimilate

LETKF = ["data.preset=lorenz96", "filter.method=letkf", "filter.particles=20", "filter.inflation=1.05",
         "filter.localization_radius=4.0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pipeline.data.twins import make_twin

    root = tmp_path_factory.mktemp("clim")
    make_twin("lorenz96", root / "data", {"cycles": 40})
    make_twin("lorenz96", root / "clim", {"cycles": 200, "seed": 1})
    make_twin("lorenz96", root / "dim20", {"cycles": 20, "seed": 1, "dim": 20})
    make_twin("lorenz63", root / "l63", {"cycles": 20, "seed": 1})
    return root


def test_members_are_states_of_the_other_run_keyed_per_particle(runs):
    cfg = load_config(overrides=[*LETKF, f"filter.init_climatology={runs / 'clim'}"])
    p = load_twin(cfg, runs / "data", torch.device("cpu"), torch.float64)
    clim = p.climatology(cfg.filter.init_climatology)
    archive = xr.open_zarr(runs / "clim" / "truth.zarr").x.values
    assert clim.shape == archive.shape
    x = p.climatological_states(clim, torch.arange(20), seed=0)
    rows = [np.flatnonzero((archive == xi.numpy()).all(1)) for xi in x]
    assert all(len(r) >= 1 for r in rows) and len({int(r[0]) for r in rows}) > 10  # archive states, drawn
    # particle i's draw does not depend on which particles are drawn with it (rank invariance)
    np.testing.assert_array_equal(p.climatological_states(clim, torch.tensor([17, 18, 19]), seed=0).numpy(), x[17:].numpy())


def test_the_letkf_converges_from_the_climatology(runs, tmp_path):
    """Started with no knowledge of the truth, the first forecast's error is the climatological one (the
    ensemble mean of draws from the climatology is near its mean: error about the L96 climatological std,
    3.6); the analyses then fall below the observation noise (std 1, every component observed)."""
    out = assimilate(load_config(overrides=[*LETKF, f"filter.init_climatology={runs / 'clim'}"]), runs / "data",
                     tmp_path / "run", fresh=True)
    ds = xr.open_zarr(tmp_path / "run" / "analysis.zarr")
    assert 2.5 < float(ds["rmse_forecast"][0]) < 5.0
    assert ds["rmse_analysis"].values[-10:].mean() < 1.0
    assert out.metrics["cycles"] == 40


@pytest.mark.parametrize("store, match", [
    ("dim20", r"filter.init_climatology=.*dim20 is another system: dim=20 \(data: 40\)"),
    ("l63", r"filter.init_climatology=.*l63 holds no lorenz96 twin"),
    ("nowhere", r"filter.init_climatology=.*nowhere: no twin store there; make one with `diffda make-data lorenz96"),
])
def test_a_wrong_store_is_refused_by_name_before_anything_is_written(runs, tmp_path, store, match):
    with pytest.raises(InputError, match=match):
        assimilate(load_config(overrides=[*LETKF, f"filter.init_climatology={runs / store}"]), runs / "data",
                   tmp_path / "out", fresh=True)
    assert not (tmp_path / "out").exists()
