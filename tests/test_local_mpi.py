"""letkf and pf-local under ``mpiexec -n 1`` and ``-n 2`` with 5 members (3 + 2 per rank): the same
analysis member for member.

Columns are analysed independently of which rank owns them, from the same gathered obs-space
arrays in canonical order, so the only P-dependence left is the all-reduce order of the weighted
mean (float64 round-off); 1e-10 over 10 cycles is far above that and far below any real error.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from tests.test_distributed_mpi import MPIEXEC, ROOT, clean_env
from tests.test_run_mpi import make_lorenz96

pytestmark = pytest.mark.mpi
COMMON = ["--preset", "lorenz96", "--set", "run.cycles=10", "--set", "filter.particles=5", "--set", "sampler.steps=4",
          "--set", "run.members=true", "--set", "filter.localization_radius=4", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lorenz96(tmp_path_factory.mktemp("l96"), 10)


@pytest.mark.parametrize("method, extra", [
    ("letkf", ["filter.inflation=1.05", "filter.rtps=0.3"]),
    ("pf-local", ["filter.weights=seed", "filter.tempering=adaptive", "filter.rtps=0.5", "filter.inflation=1.05"]),
    ("pf-local", ["filter.transform=netf", "filter.rtps=0.5"]),
    ("pf-local", ["filter.transform=netf", "filter.hybrid=1.0", "filter.rtps=0.5"]),
    ("pf-local", ["filter.transform=netf", "filter.hybrid=1.0", "filter.rtps=0.5", "filter.static_gain=0.5",
                  "filter.static_samples={samples}", "filter.static_radius=6"]),
])
def test_local_filters_independent_of_ranks(data, tmp_path, method: str, extra: list[str]) -> None:
    if MPIEXEC is None:
        pytest.skip("no mpiexec")
    samples = tmp_path / "static.npz"  # the static covariance's samples: the truth's tendencies
    truth = xr.open_zarr(data / "truth.zarr").x.values
    np.savez(samples, samples=np.diff(truth, axis=0))
    extra = [e.format(samples=samples) for e in extra]
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"{method}-p{n}"
        cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "pipeline.cli", "run", "--data", str(data),
               "--out", str(out), *COMMON, "--set", f"filter.method={method}", *sum((["--set", e] for e in extra), [])]
        proc = subprocess.run(cmd, env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[n] = xr.open_zarr(out / "analysis.zarr").load()
    for var in ("x_members", "x", "x_spread", "ess", "alpha"):
        diff = float(np.abs(outs[2][var].values - outs[1][var].values).max())
        assert diff <= 1e-10, (var, diff)
    assert float(outs[1].rmse_analysis.values[-1]) < 2.0  # it assimilates (free-run error is ~3.5 here)
