"""The hybrid-gain correction by a static covariance (pipeline/filters/static_gain.py) and its tendency
samples (pipeline/models/static_samples.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.diffusion.observation import Observation, ObservationOperator
from pipeline.distributed.comm import LocalComm
from pipeline.errors import DiffdaError, InputError
from pipeline.filters.base import CycleResult, Diagnostics
from pipeline.filters.ensemble import Ensemble
from pipeline.filters.localisation import gaspari_cohn, ring
from pipeline.filters.static_gain import StaticGain, static_increment


def _problem(d: int = 12, s: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(s, d, generator=g, dtype=torch.float64) / 4
    index = torch.tensor([1, 4, 7, 10])
    var = torch.tensor([0.5, 0.3, 0.2, 0.4], dtype=torch.float64)
    xbar = torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.randn(4, generator=g, dtype=torch.float64)
    return z, xbar, Observation(y, var, ObservationOperator(index))


def _selection(obs: Observation, d: int) -> torch.Tensor:
    h = torch.zeros(obs.size, d, dtype=torch.float64)
    h[torch.arange(obs.size), obs.operator.index] = 1.0
    return h


def test_infinite_radius_is_the_kalman_update_of_the_mean():
    """beta = 1, no localisation: delta = B H^T (H B H^T + R)^-1 (y - H xbar), B = Z^T Z, to round-off."""
    z, xbar, obs = _problem()
    b, h = z.T @ z, _selection(obs, z.shape[1])
    want = b @ h.T @ torch.linalg.solve(h @ b @ h.T + torch.diag(obs.variance), obs.y - h @ xbar)
    got = static_increment(z, xbar, obs, ring(z.shape[1]), None, 1.0)
    assert torch.allclose(got, want, atol=1e-13, rtol=0)
    assert torch.allclose(static_increment(z, xbar, obs, ring(z.shape[1]), None, 0.4), 0.4 * want, atol=1e-13, rtol=0)


def test_localised_gain_is_the_schur_product_of_b_and_the_taper():
    """With radius c the covariance is B o C, C = GC(d(i, j) / c) on the ring: the explicit dense formula."""
    z, xbar, obs = _problem(d=20)
    d = z.shape[1]
    geo = ring(d)
    c = gaspari_cohn(geo.distances / 1.5)
    b, h = (z.T @ z) * c, _selection(obs, d)
    want = b @ h.T @ torch.linalg.solve(h @ b @ h.T + torch.diag(obs.variance), obs.y - h @ xbar)
    got = static_increment(z, xbar, obs, geo, 1.5, 1.0)
    assert torch.allclose(got, want, atol=1e-13, rtol=0)
    far = (geo.distances[:, obs.operator.index] >= 3.0).all(1)  # beyond 2c of every observation: untouched
    assert far.any() and float(got[far].abs().max()) == 0.0


def test_nonlinear_operator_is_linearised_at_the_mean():
    z, xbar, obs = _problem()
    arctan = Observation(obs.y.clamp(-1, 1), obs.variance, ObservationOperator(obs.operator.index, "arctan"))
    d = z.shape[1]
    h = _selection(obs, d) / (1 + xbar[obs.operator.index] ** 2)[:, None]  # H' = diag(f'(xbar)) S
    b = z.T @ z
    innov = arctan.y - torch.atan(xbar[obs.operator.index])
    want = b @ h.T @ torch.linalg.solve(h @ b @ h.T + torch.diag(obs.variance), innov)
    assert torch.allclose(static_increment(z, xbar, arctan, ring(d), None, 1.0), want, atol=1e-13, rtol=0)


def test_every_member_moves_by_the_increment_of_the_weighted_mean():
    """The analysis (and a separate carried ensemble) shift by delta of the weighted mean; anomalies, weights
    and the history's past states are unchanged."""
    z, _, obs = _problem()
    n, d = 5, z.shape[1]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, d, generator=g, dtype=torch.float64)  # history K = 2
    lw = torch.log_softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    ens = Ensemble(torch.arange(n), x, lw)
    carry = Ensemble(torch.arange(n), x.flip(0).clone(), torch.full((n,), -np.log(n), dtype=torch.float64))
    step = StaticGain(LocalComm(), z, ring(d), 3.0, 0.7, history=2)
    out = step(CycleResult(ens, x[:, -1].mean(0), Diagnostics(ess=float(n)), carry), obs)
    mean = (torch.exp(lw)[:, None] * x[:, -1]).sum(0)
    delta = static_increment(z, mean, obs, ring(d), 3.0, 0.7)
    assert torch.allclose(out.analysis.x[:, -1], x[:, -1] + delta, atol=1e-14, rtol=0)
    assert torch.equal(out.analysis.x[:, 0], x[:, 0]) and torch.equal(out.analysis.log_w, lw)
    assert torch.allclose(out.next.x[:, -1], carry.x[:, -1] + delta, atol=1e-14, rtol=0)
    empty = Observation(obs.y[:0], obs.variance[:0], ObservationOperator(obs.operator.index[:0]))
    same = step(CycleResult(ens, x[:, -1].mean(0), Diagnostics(ess=float(n))), empty)
    assert torch.equal(same.analysis.x, x)


def test_static_samples_file_is_checked(tmp_path):
    from pipeline.models.static_samples import load_anomalies, save

    with pytest.raises(InputError, match="filter.static_samples: no static samples.*filter.static_gain=0"):
        load_anomalies(tmp_path / "absent.npz", (2, 3))
    save(tmp_path / "s.npz", np.ones((4, 2, 3), dtype=np.float32), [1, 2, 3, 4], "data")
    with pytest.raises(InputError, match=r"shape \[4, 2, 3\].*state is \[3, 2\]"):
        load_anomalies(tmp_path / "s.npz", (3, 2))
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError, match="not a readable file of static samples"):
        load_anomalies(tmp_path / "bad.npz", (2, 3))


def test_tendencies_over_lag_cycles(tmp_path, capsys):
    """``t_k = x^{k+L} - x^k`` on a trajectory ``x^k = k c``: every sample is ``L c``, the cycles evenly
    spaced and the last ``k + L`` inside the data; too short a trajectory is refused, and ``--lag`` below
    1 by name before any data is read or file written."""
    from pipeline.cli import main
    from pipeline.models.static_samples import estimate

    c = torch.tensor([1.0, -2.0, 0.5])

    class Line:
        n_cycles = 20

        def truth(self, k):
            assert 0 <= k < self.n_cycles
            return k * c

    for lag in (1, 2, 4):
        t, cycles = estimate(Line(), 8, lag=lag)
        assert np.array_equal(t, np.tile(lag * c.numpy(), (8, 1))) and max(cycles) + lag < 20
        assert cycles == sorted(set(cycles))
    with pytest.raises(InputError, match="fewer than the 18 samples"):
        estimate(Line(), 18, lag=4)
    out = tmp_path / "s.npz"
    assert main(["static-samples", "--data", str(tmp_path / "absent"), "--lag", "0", "--out", str(out)]) == 2
    assert "--lag must be >= 1" in capsys.readouterr().err and not out.exists()


pytest.importorskip("dinosaur")
RUN = ["run.cycles=3", "filter.particles=4", "sampler.steps=2", "run.micro_batch=4", "run.free_baseline=false",
       "filter.additive_inflation=0"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from pipeline.data import sphere

    out = tmp_path_factory.mktemp("emu")
    sphere.make_sphere(out, {"days": 2, "spinup_days": sphere.SHIPPED_SPINUP, "seed": 6, "truth": "emulator",
                             "sampler_steps": 2})
    return out


def test_static_samples_command_and_a_run_with_the_static_gain(twin, tmp_path):
    """`diffda static-samples` stores 6-hour tendencies (the size of 6-hour persistence's error); the run
    with filter.static_gain moves the first analysis toward the observations; a missing file is refused
    before anything is written."""
    import xarray as xr

    from pipeline.cli import main
    from pipeline.commands.run import EMBEDDED_DEFAULT
    from pipeline.config import load_config
    from pipeline.run import assimilate

    out = tmp_path / "static.npz"
    assert main(["static-samples", "--data", str(twin), "--samples", "6", "--out", str(out)]) == 0
    with np.load(out) as f:
        t = f["samples"].astype(np.float64)
    assert t.shape == (6, 12, 32, 64) and np.isfinite(t).all()
    assert 0.02 < float(np.sqrt((t**2).mean())) < 0.6  # the 6-hour change, normalised (persistence: ~0.19)
    plain = load_config(EMBEDDED_DEFAULT, RUN)
    assimilate(plain, twin, tmp_path / "plain", fresh=True)
    cfg = load_config(EMBEDDED_DEFAULT, [*RUN, "filter.static_gain=1.0", f"filter.static_samples={out}",
                                         "filter.static_radius=auto", "filter.localization_radius=auto",
                                         "filter.static_scale=2.0"])
    got = assimilate(cfg, twin, tmp_path / "static", fresh=True).metrics["radii"]
    spacing = (4 * np.pi * 6371.0**2 / (16 * 32)) ** 0.5  # every 2nd point of 64 x 32: 998 km
    assert abs(got["localization_radius"] - 0.75 * spacing) < 1e-3 and abs(got["static_radius"] - 1.5 * spacing) < 1e-3
    a = xr.open_zarr(tmp_path / "plain" / "analysis.zarr")
    b = xr.open_zarr(tmp_path / "static" / "analysis.zarr")
    assert float(a.rmse_forecast[0]) == float(b.rmse_forecast[0])  # the same forecast, then the shift
    assert float(a.rmse_analysis[0]) != float(b.rmse_analysis[0])
    bad = load_config(EMBEDDED_DEFAULT, [*RUN, "filter.static_gain=1.0", f"filter.static_samples={tmp_path}/x.npz"])
    with pytest.raises(DiffdaError, match="filter.static_samples"):
        assimilate(bad, twin, tmp_path / "refused", fresh=True)
    assert not (tmp_path / "refused" / "analysis.zarr").exists()
