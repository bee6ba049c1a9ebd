"""The analysis writer: template first, region writes, idempotent rewrites, consolidated at the end."""

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.data.analysis import AnalysisStore


def _like():
    return xr.Dataset({"x": (("component",), np.zeros(3))}, coords={"component": np.arange(3)})


def test_template_then_regions_idempotent(tmp_path):
    times = pd.date_range("2000-01-01", periods=4, freq="6h").values
    path = tmp_path / "analysis.zarr"
    store = AnalysisStore.create(path, _like(), times, {"config": {"k": 1}}, ["ess"])
    dims = {"x": ("component",), "ess": ()}
    for _ in range(2):  # rewriting a cycle is harmless
        store.write_cycle(2, {"x": np.array([1.0, 2.0, 3.0]), "ess": np.array(5.0)}, dims)
    ds = xr.open_zarr(path, consolidated=False)
    assert np.isnan(ds.x.values[[0, 1, 3]]).all() and ds.x.values[2].tolist() == [1, 2, 3]
    assert ds.attrs["complete"] == 0
    # resuming reopens without touching written cycles
    store = AnalysisStore.create(path, _like(), times, {}, ["ess"], resume=True)
    store.write_cycle(3, {"x": np.array([4.0, 4.0, 4.0]), "ess": np.array(1.0)}, dims)
    store.finalise()
    ds = xr.open_zarr(path)
    assert ds.attrs["complete"] == 1 and ds.ess.values[2] == 5.0 and ds.ess.values[3] == 1.0
    assert ds.x.encoding["chunks"][0] == 1  # one cycle per chunk: one writer per chunk
