"""``diffda smooth`` on the linear twin against the RTS oracle, and its refusals.

Oracle tolerance: the smoothed mean of S samples differs from the exact posterior mean by Monte-Carlo
error alone, ``|m_S - m| / std ~ |N(0, rho^2 / S)|`` per state (``rho`` = sample spread / RTS std),
whose mean is ``sqrt(2/pi) rho / sqrt(S)`` ~ 0.04 at S = 256; ``oracle_mc`` is three of its standard
errors (``3 rho / sqrt(S)``). Asked: within 0.15 posterior std on average, RMSE within 10 % of RTS.
"""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.cli import main
from pipeline.config import ConfigError
from pipeline.diffusion.schedules import make_schedule
from pipeline.errors import InputError
from pipeline.models.dynamics import Linear
from pipeline.smoothers.gaussian import GaussianWindowDenoiser
from pipeline.smoothers.window import check_window

FAST = ["--set", "sampler.steps=32"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("linear")
    assert main(["make-data", "linear", "--out", str(d), "--set", "cycles=40"]) == 0
    return d


@pytest.mark.parametrize("k, corrections", [(7, 0), (3, 1)])  # full width; 2k+1 = 7 < L = 15
def test_smooth_matches_rts(data, tmp_path, k, corrections):
    out = tmp_path / "out"
    rc = main(["smooth", "pipeline/presets/linear-smooth.yaml", "--data", str(data), "--out", str(out), *FAST,
               "--set", f"smoother.window_half_width={k}", "--set", f"sampler.corrections={corrections}",
               "--set", "run.members=true"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["oracle_error"] < 0.15
    if k == 7:  # exact prior: Monte-Carlo error only
        assert m["oracle_error"] < 0.05 + m["oracle_mc"]
    assert abs(m["rmse_analysis"] / m["rmse_rts"] - 1) < 0.10
    assert 0.8 < m["oracle_spread_ratio"] < 1.2
    ds = xr.open_zarr(out / "analysis.zarr")
    assert ds.x.dims == ("time", "component") and ds.sizes["time"] == 15 and ds.attrs["complete"] == 1
    assert ds.x_members.sizes["member"] == 256
    assert np.allclose(ds.x.values, ds.x_members.values.mean(1))
    assert (out / "smooth.png").stat().st_size > 0


def test_window_shorter_than_2k_plus_1_refused(data, tmp_path, capsys):
    rc = main(["smooth", "pipeline/presets/linear-smooth.yaml", "--data", str(data), "--out", str(tmp_path / "o"),
               "--set", "run.cycles=4", "--set", "smoother.window_half_width=2"])
    assert rc == 2 and "smoother.window_half_width" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_observation_times_refused(data, tmp_path, capsys):
    gap = tmp_path / "gap"
    gap.mkdir()
    xr.open_zarr(data / "truth.zarr").load().to_zarr(gap / "truth.zarr")
    obs = xr.open_zarr(data / "observations.zarr").load()
    obs.isel(time=[i for i in range(obs.sizes["time"]) if i != 12]).to_zarr(gap / "observations.zarr")
    rc = main(["smooth", "pipeline/presets/linear-smooth.yaml", "--data", str(gap), "--out", str(tmp_path / "o")])
    assert rc == 2 and "observation times" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_window_denoiser_mismatch_refused():
    M, Q = Linear().matrix(4), 0.1 * torch.eye(4, dtype=torch.float64)
    den = GaussianWindowDenoiser(make_schedule("vp-cosine"), M, Q, 1)
    check_window(den, 1, 15, 4)
    with pytest.raises(ConfigError, match="smoother.window_half_width"):
        check_window(den, 2, 15, 4)
    with pytest.raises(InputError, match="variables"):
        check_window(den, 1, 15, 5)


@pytest.mark.mpi
def test_smoothed_window_independent_of_rank_count(data, tmp_path):
    import subprocess
    import sys

    from tests.test_distributed_mpi import MPIEXEC, ROOT, clean_env

    got = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "pipeline.cli", "smooth", "pipeline/presets/linear-smooth.yaml",
               "--data", str(data), "--out", str(out), "--set", "sampler.steps=8", "--set", "smoother.samples=16",
               "--set", "smoother.window_half_width=2"]
        proc = subprocess.run(cmd, env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got[n] = xr.open_zarr(out / "analysis.zarr").load()
    for var in ("x", "x_spread"):
        np.testing.assert_allclose(got[2][var].values, got[1][var].values, rtol=0, atol=1e-10)
