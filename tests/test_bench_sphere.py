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


def test_verdict_applies_every_bar_of_issue_14():
    from pipeline.bench.bench_sphere import verdict

    good = {"ratio_free": 0.6, "ratio_persistence": 0.9, "trend": 1.1, "temperature_at_observed": 0.7,
            "temperature_noise_std": 1.0, "spread_ratio": 0.9, "rmse": 0.2}
    warm_obs = {**good, "temperature_at_observed": 1.1}  # every bar but the observed temperature's
    lines = verdict({("free", 16): {}, ("pf-local", 16): good, ("letkf", 16): warm_obs,
                     ("pf-local", 64): {**good, "trend": 1.3}}, twin=False).splitlines()
    assert lines[0].startswith("- pf-local, N = 16") and lines[0].endswith("met. Against the LETKF at the same N: 1.00 x.")
    assert "not met" not in lines[0]
    assert "not met" in lines[1] and "T at observed points 1.10 K (bar < 1 K)" in lines[1]
    assert "trend 1.30 (bar 1.25)" in lines[2] and "not met" in lines[2]
    twin = verdict({("letkf", 16): {**good, "ratio_free": 0.45, "spread_ratio": 0.5}}, twin=True)
    assert "0.45 x the free run (bar 0.5), spread/RMSE 0.50 (bar 0.6-1.5): not met" in twin


def test_a_bad_number_list_is_refused_naming_the_option(capsys):
    from pipeline import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "sphere", "--particles", "16,x"])
    assert exit_.value.code == 2
    assert "argument --particles: expected comma-separated integers, e.g. 16,64; got '16,x'" in capsys.readouterr().err
