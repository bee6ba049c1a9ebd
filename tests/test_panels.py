"""Per-variable scores of a gridded run (pipeline/evaluate/panels.py) on stores with known errors."""

import json

import numpy as np
import pytest
import xarray as xr

from pipeline.evaluate.panels import checkpoint_std, error_budget, panel_scores


def test_panel_rmse_and_persistence(tmp_path):
    time = np.datetime64("2000-01-01T00") + np.arange(6) * np.timedelta64(6, "h")
    coords = {"time": time, "level": [250.0, 500.0, 850.0], "latitude": [-45.0, 45.0], "longitude": [0.0, 90.0, 180.0]}
    shape = (6, 3, 2, 3)
    t = np.arange(6, dtype=float)[:, None, None, None] * 0.5 + np.zeros(shape)  # +0.5 K per 6 h
    truth = xr.Dataset({"temperature": (tuple(coords), t)}, coords=coords)
    (tmp_path / "data").mkdir()
    truth.to_zarr(tmp_path / "data" / "truth.zarr")
    ana = truth.isel(time=slice(1, None)) + 2.0  # 2 K error everywhere
    ana["rmse_analysis"] = ("time", np.full(5, 0.3))
    (tmp_path / "run").mkdir()
    ana.to_zarr(tmp_path / "run" / "analysis.zarr")
    s = panel_scores(tmp_path / "run", tmp_path / "data", skip=2)
    assert s["cycles"] == 3 and "Z500" not in s
    np.testing.assert_allclose([s["T850"], s["T850_persistence"], s["rmse_analysis"]], [2.0, 0.5, 0.3], rtol=1e-12)


def test_observed_variable_at_observed_points(tmp_path):
    """``temperature_at_observed``: the RMSE over the points where observations.zarr has a value only."""
    time = np.datetime64("2000-01-01T00") + np.arange(4) * np.timedelta64(6, "h")
    coords = {"time": time, "level": [500.0, 850.0], "latitude": [-45.0, 45.0], "longitude": [0.0, 180.0]}
    shape = (4, 2, 2, 2)
    truth = xr.Dataset({"temperature": (tuple(coords), np.zeros(shape))}, coords=coords)
    (tmp_path / "data").mkdir()
    truth.to_zarr(tmp_path / "data" / "truth.zarr")
    err = np.where(np.arange(2)[None, None, None, :] == 0, 0.5, 3.0) + np.zeros(shape)  # 0.5 K at lon 0, 3 K at 180
    ana = xr.Dataset({"temperature": (tuple(coords), err)}, coords=coords).isel(time=slice(1, None))
    (tmp_path / "run").mkdir()
    ana.to_zarr(tmp_path / "run" / "analysis.zarr")
    y = np.where(np.arange(2)[None, None, None, :] == 0, 1.0, np.nan) + np.zeros(shape)  # observed at lon 0 only
    obs = xr.Dataset({"temperature": (tuple(coords), y, {"noise_std": 1.0})}, coords=coords).isel(time=slice(1, None))
    obs.to_zarr(tmp_path / "data" / "observations.zarr")
    s = panel_scores(tmp_path / "run", tmp_path / "data", skip=1)
    assert s["temperature_at_observed"] == 0.5 and s["temperature_noise_std"] == 1.0


def test_plot_runs_writes_a_png(tmp_path):
    from pipeline.evaluate.plots import plot_runs

    d = {"rmse_analysis": np.linspace(0.1, 0.3, 5), "spread_analysis": np.full(5, 0.2), "rmse_free": np.linspace(0.1, 0.6, 5)}
    plot_runs(tmp_path / "c.png", {"a": d, "b": {**d, "rmse_free": np.full(5, np.nan)}}, "t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "c.png").stat().st_size > 10_000


def test_trend_of_the_last_ten_cycles_over_the_first_ten(tmp_path):
    time = np.datetime64("2000-01-01T00") + np.arange(26) * np.timedelta64(6, "h")
    coords = {"time": time, "level": [850.0], "latitude": [0.0], "longitude": [0.0]}
    truth = xr.Dataset({"temperature": (tuple(coords), np.zeros((26, 1, 1, 1)))}, coords=coords)
    (tmp_path / "data").mkdir()
    truth.to_zarr(tmp_path / "data" / "truth.zarr")
    ana = truth.isel(time=slice(1, None))
    ana["rmse_analysis"] = ("time", np.r_[np.full(5, 9.0), np.full(10, 0.2), np.full(10, 0.3)])
    (tmp_path / "run").mkdir()
    ana.to_zarr(tmp_path / "run" / "analysis.zarr")
    s = panel_scores(tmp_path / "run", tmp_path / "data", skip=5)
    np.testing.assert_allclose([s["rmse_first10"], s["rmse_last10"], s["trend"]], [0.2, 0.3, 1.5], rtol=1e-12)


def test_error_budget_splits_the_normalised_mse_by_variable_and_zonal_mean(tmp_path):
    """Temperature off by a uniform 1 K (std 1: all of its error zonal-mean), u off by +-2 m/s
    alternating in longitude (std 2: none of it zonal-mean): each half of the MSE, whose root is 1."""
    time = np.datetime64("2000-01-01T00") + np.arange(4) * np.timedelta64(6, "h")
    coords = {"time": time, "level": [850.0], "latitude": [-45.0, 45.0], "longitude": [0.0, 90.0, 180.0, 270.0]}
    shape = (4, 1, 2, 4)
    truth = xr.Dataset({"temperature": (tuple(coords), np.zeros(shape)),
                        "u_component_of_wind": (tuple(coords), np.zeros(shape))}, coords=coords)
    (tmp_path / "data").mkdir()
    truth.to_zarr(tmp_path / "data" / "truth.zarr")
    sign = np.where(np.arange(4) % 2 == 0, 1.0, -1.0)[None, None, None, :]
    ana = xr.Dataset({"temperature": (tuple(coords), np.ones(shape)),
                      "u_component_of_wind": (tuple(coords), 2.0 * sign + np.zeros(shape))}, coords=coords)
    (tmp_path / "run").mkdir()
    ana.isel(time=slice(1, None)).to_zarr(tmp_path / "run" / "analysis.zarr")
    b = error_budget(tmp_path / "run", tmp_path / "data", {("temperature", 850.0): 1.0, ("u_component_of_wind", 850.0): 2.0}, skip=1)
    np.testing.assert_allclose([b["rmse"], b["temperature"]["share"], b["temperature"]["zonal_share"],
                                b["u_component_of_wind"]["share"], b["u_component_of_wind"]["zonal_share"]],
                               [1.0, 0.5, 0.5, 0.5, 0.0], atol=1e-12)


def test_checkpoint_std_is_the_shipped_emulators_when_the_run_named_none(tmp_path):
    (tmp_path / "run").mkdir()
    store = xr.Dataset(attrs={"config": json.dumps({"model": {"kind": "neural", "checkpoint": None}})})
    store.to_zarr(tmp_path / "run" / "analysis.zarr")
    std = checkpoint_std(tmp_path / "run")
    assert len(std) == 12 and std[("geopotential", 500.0)] > 1000 and 0 < std[("temperature", 850.0)] < 30
    (tmp_path / "g").mkdir()
    xr.Dataset(attrs={"config": json.dumps({"model": {"kind": "gaussian"}})}).to_zarr(tmp_path / "g" / "analysis.zarr")
    with pytest.raises(ValueError, match="model=gaussian"):
        checkpoint_std(tmp_path / "g")
