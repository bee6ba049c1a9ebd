"""Non-finite values in ``diffda run``: refused at the start, unscored at a truth time, fatal mid-run."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from era5_stores import era5_dataset, write_store
from pipeline import cli, particle_checkpoint
from pipeline.commands.make_data import make_data
from pipeline.config import load_config
from pipeline.data.observe import ObservationSpec, build_observations, write_observations
from pipeline.errors import InputError
from pipeline.run import assimilate

ARGS = ["--preset", "lorenz63", "--set", "filter.particles=8", "--set", "sampler.steps=4", "--quiet"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    data = tmp_path_factory.mktemp("twin")
    make_data("lorenz63", data, {"cycles": 6})
    return data


def _with_nan(twin, tmp_path, time: int, component: int):
    """A copy of the twin whose truth is NaN at (time index, component)."""
    data = tmp_path / "data"
    shutil.copytree(twin, data)
    ds = xr.open_zarr(data / "truth.zarr").load()
    ds.x[time, component] = np.nan
    ds.to_zarr(data / "truth.zarr", mode="w", consolidated=True)
    return data, ds.time.values[time]


def _run(data, out, *extra):
    return cli.main(["run", *ARGS, "--data", str(data), "--out", str(out), *extra])


def test_nan_initial_state_is_refused_before_any_output(twin, tmp_path, capsys):
    data, t0 = _with_nan(twin, tmp_path, 0, 1)
    assert _run(data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "initial state is not finite" in err and "x at time" in err and "component 1" in err
    assert str(np.datetime_as_string(t0, "m")) in err
    assert not (tmp_path / "out").exists()  # made for the lock only, removed with it: nothing left behind


def test_nan_gridded_initial_state_names_variable_level_time_and_point(tmp_path):
    ds = era5_dataset(nt=4)
    write_observations(build_observations(ds.isel(time=slice(1, None)), ObservationSpec()), tmp_path / "observations.zarr")
    ds.temperature[0, 1, 2, 3] = np.nan  # 500 hPa
    write_store(ds, tmp_path / "truth.zarr")
    cfg = load_config(overrides=["data.preset=era5", "filter.particles=4", "sampler.steps=2"])
    with pytest.raises(InputError) as err:
        assimilate(cfg, tmp_path, tmp_path / "out")
    lat, lon = float(ds.latitude[2]), float(ds.longitude[3])
    assert (f"temperature at 500 hPa at time 2020-01-01T00:00, latitude {lat:g}, longitude {lon:g}"
            in str(err.value)), err.value
    assert not (tmp_path / "out").exists()


def test_nan_truth_at_a_scoring_time_is_unscored_and_listed(twin, tmp_path, capsys):
    data, _ = _with_nan(twin, tmp_path, 3, 2)  # truth of cycle 3
    out = tmp_path / "out"
    assert _run(data, out, "--set", "filter.spinup=0") == 0
    err = capsys.readouterr()
    assert err.err.count("cycle 3 is not scored") == 1 and "unscored cycles" in err.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unscored"] == [3]
    rmse = xr.open_zarr(out / "analysis.zarr").rmse_analysis.values
    assert np.isnan(rmse[2]) and np.isfinite(np.delete(rmse, 2)).all()
    assert metrics["rmse_analysis"] == pytest.approx(np.delete(rmse, 2).mean())


def test_state_turning_nan_stops_before_the_cycle_is_written(twin, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("DIFFDA_NAN_CYCLE", "4")
    monkeypatch.setenv("DIFFDA_NAN_PARTICLE", "5")
    assert _run(twin, out) == 2
    err = capsys.readouterr().err
    assert "cycle 4: particle 5 is not finite" in err and "checkpoint of cycle 3 is kept" in err
    assert particle_checkpoint.latest(out / "checkpoint")["cycle"] == 3
    assert np.isnan(xr.open_zarr(out / "analysis.zarr", consolidated=False).ess.values[3:]).all()  # cycle 4 never written
    monkeypatch.delenv("DIFFDA_NAN_CYCLE")
    assert _run(twin, out) == 0
    assert re.search(r"resumed after cycle\s+3\n", capsys.readouterr().out)
    assert np.isfinite(xr.open_zarr(out / "analysis.zarr").x.values).all()


@pytest.mark.mpi
def test_nan_on_another_rank_stops_every_rank(twin, tmp_path):
    from tests.test_distributed_mpi import MPIEXEC, ROOT, clean_env

    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "pipeline.cli", "run", *ARGS, "--data", str(twin),
           "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=clean_env(DIFFDA_NAN_CYCLE="3", DIFFDA_NAN_PARTICLE="6"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cycle 3: particle 6 is not finite" in proc.stdout + proc.stderr
    assert particle_checkpoint.latest(tmp_path / "out" / "checkpoint")["cycle"] == 2
