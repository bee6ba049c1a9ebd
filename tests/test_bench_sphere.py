"""diffda bench sphere (pipeline/bench/bench_sphere.py): its persistence score and its refusals."""

import numpy as np
import pytest
import xarray as xr

from pipeline.bench.bench_sphere import METHODS, persistence, row_command, run_sphere
from pipeline.errors import DiffdaError


def test_persistence_is_the_normalised_six_hour_change(tmp_path):
    """T rises 0.5 K and u 2 m/s per 6 h everywhere: with stds 0.25 K and 1 m/s both normalised changes
    are 2, so the all-channel RMSE of x(t - 6 h) against x(t) is exactly 2."""
    time = np.datetime64("2000-01-01T00") + np.arange(5) * np.timedelta64(6, "h")
    coords = {"time": time, "level": [850.0], "latitude": [-45.0, 45.0], "longitude": [0.0, 180.0]}
    k = np.arange(5, dtype=float)[:, None, None, None] + np.zeros((5, 1, 2, 2))
    ds = xr.Dataset({"temperature": (tuple(coords), 0.5 * k), "u_component_of_wind": (tuple(coords), 2.0 * k)},
                    coords=coords)
    ds.to_zarr(tmp_path / "truth.zarr")
    std = {("temperature", 850.0): 0.25, ("u_component_of_wind", 850.0): 1.0}
    assert persistence(tmp_path, time[1:], std) == pytest.approx(2.0, rel=1e-12)


def test_rows_are_the_embedded_default_with_the_method_overrides(tmp_path):
    cmd = row_command("letkf", 64, tmp_path / "d", tmp_path / "o", 50, 10, ["run.seed=1"], fresh=False)
    assert cmd[0] == "run" and cmd[1].endswith("presets/default.yaml") and "--fresh" not in cmd
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert sets == ["run.cycles=50", "filter.spinup=10", "filter.particles=64", "run.free_baseline=false",
                    *METHODS["letkf"], "run.seed=1"]


@pytest.mark.parametrize("methods, cycles, match", [(["pf-lcoal"], 50, "unknown"), (["letkf"], 25, "at least 20")])
def test_bad_arguments_refused_before_any_run(tmp_path, methods, cycles, match):
    (tmp_path / "d" / "truth.zarr").mkdir(parents=True)
    (tmp_path / "d" / "observations.zarr").mkdir()
    with pytest.raises(DiffdaError, match=match):
        run_sphere(tmp_path / "d", tmp_path / "o", methods, [16], cycles, 10, [])
    assert not (tmp_path / "o").exists()
