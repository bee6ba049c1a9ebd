"""``diffda run`` under ``mpiexec -n P``: the analysis does not depend on P or on the micro-batch.

Randomness is keyed by (seed, cycle, canonical particle id, purpose) and weights are normalised
from the canonical-order vector, so the only P-dependence left is the summation order of the
weighted mean/variance all-reduce (float64 round-off, ~1e-16 relative); over 12 Lorenz-96
cycles that stays far below the 1e-6 the issue asks for.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from tests.test_distributed_mpi import MPIEXEC, ROOT, clean_env

pytestmark = pytest.mark.mpi
COMMON = ["--preset", "lorenz96", "--set", "run.cycles=12", "--set", "filter.particles=10",
          "--set", "sampler.steps=8", "--set", "filter.resample_threshold=0.9", "--quiet"]


def run(n: int, data, out, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "pipeline.cli", "run", "--data", str(data),
           "--out", str(out), *COMMON, *extra]
    return subprocess.run(cmd, env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)


def make_lorenz96(d, cycles: int):
    """A Lorenz-96 twin store of ``cycles`` cycles in ``d``, made by the CLI (as users do)."""
    subprocess.run([sys.executable, "-m", "pipeline.cli", "make-data", "lorenz96", "--out", str(d),
                    "--set", f"cycles={cycles}"], check=True, env=clean_env(), cwd=ROOT, capture_output=True)
    return d


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lorenz96(tmp_path_factory.mktemp("l96"), 12)


def test_analysis_independent_of_ranks_and_micro_batch(data, tmp_path):
    outs = {}
    for n, mb in ((1, 0), (2, 0), (2, 3)):  # -n 4 is covered by test_distributed_mpi
        out = tmp_path / f"p{n}-mb{mb}"
        proc = run(n, data, out, "--set", f"run.micro_batch={mb}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[(n, mb)] = xr.open_zarr(out / "analysis.zarr").load()
    ref = outs[(1, 0)]
    assert ref.resampled.sum() > 0  # the comparison covers resampling and migration
    for key, ds in outs.items():
        for var in ("x", "x_spread", "ess"):
            diff = float(np.abs(ds[var].values - ref[var].values).max())
            assert diff <= 1e-6, (key, var, diff)


def test_one_rank_fails_mid_run(data, tmp_path):
    # a corrupt observation store read by every rank would fail everywhere; instead ask for a
    # device only rank 1 cannot use: DIFFDA_FAIL_RANK makes rank 1 raise inside cycle 3.
    env = clean_env(DIFFDA_FAIL_RANK="1", DIFFDA_FAIL_CYCLE="3")
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "pipeline.cli", "run", "--data", str(data),
           "--out", str(tmp_path / "fail"), *COMMON]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 failed" in proc.stdout + proc.stderr
