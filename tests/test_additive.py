"""Additive model-error inflation (pipeline/filters/additive.py) and its samples (pipeline/models/model_error.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.distributed.comm import LocalComm
from pipeline.errors import DiffdaError, InputError
from pipeline.filters.additive import AdditiveInflation
from pipeline.filters.ensemble import Ensemble


def _ensemble(n: int, shape: tuple[int, ...]) -> Ensemble:
    g = torch.Generator().manual_seed(0)
    return Ensemble(torch.arange(n), torch.randn((n, *shape), generator=g, dtype=torch.float64),
                    torch.full((n,), -np.log(n), dtype=torch.float64))


def test_perturbations_have_the_model_error_covariance_and_keep_the_mean():
    """delta = a (E^T z_j / sqrt(S-1) - mean): Cov = a^2 (1 - 1/N) E^T E / (S-1), mean unchanged."""
    e = torch.tensor([[1.0, 0.5, 0.0], [-1.0, 0.5, 2.0], [0.5, -1.0, -1.0], [-0.5, 0.0, -1.0]], dtype=torch.float64)
    e = e - e.mean(0)
    n, a = 4000, 0.7
    ens = _ensemble(n, (3,))
    out = AdditiveInflation(LocalComm(), e, a, seed=3)(ens, cycle=5)
    delta = out.x - ens.x
    assert torch.allclose(out.x.mean(0), ens.x.mean(0), atol=1e-12)  # recentred: the mean does not move
    want = a**2 * (1 - 1 / n) * (e.T @ e) / (len(e) - 1)
    got = delta.T @ delta / n
    # Monte-Carlo error of a covariance entry from n Gaussian draws: sqrt((C_ii C_jj + C_ij^2) / n)
    d = torch.diagonal(want)
    tol = 5 * torch.sqrt((d[:, None] * d[None, :] + want**2) / n)
    assert bool(((got - want).abs() <= tol).all()), (got, want)
    # keyed per (seed, cycle, particle): the same call again gives the same draw, another cycle another
    again = AdditiveInflation(LocalComm(), e, a, seed=3)(ens, cycle=5)
    assert torch.equal(again.x, out.x)
    other = AdditiveInflation(LocalComm(), e, a, seed=3)(ens, cycle=6)
    assert not torch.allclose(other.x, out.x)


def test_only_the_newest_state_of_the_history_is_perturbed():
    e = torch.randn(5, 2 * 3, dtype=torch.float64)
    ens = _ensemble(6, (2, 2, 3))  # [n, K = 2, *S = (2, 3)]
    out = AdditiveInflation(LocalComm(), e - e.mean(0), 1.0, seed=0, history=2)(ens, cycle=1)
    assert torch.equal(out.x[:, 0], ens.x[:, 0])
    assert not torch.allclose(out.x[:, 1], ens.x[:, 1])


def test_model_error_file_is_checked(tmp_path):
    from pipeline.models.model_error import load_anomalies, save

    with pytest.raises(InputError, match="filter.model_error: no model-error samples"):
        load_anomalies(tmp_path / "absent.npz", (2, 3))
    save(tmp_path / "me.npz", np.ones((4, 2, 3), dtype=np.float32), [1, 2, 3, 4], "data")
    with pytest.raises(InputError, match=r"shape \[4, 2, 3\].*state is \[3, 2\]"):
        load_anomalies(tmp_path / "me.npz", (3, 2))
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError, match="not a readable file of model-error samples"):
        load_anomalies(tmp_path / "bad.npz", (2, 3))
    a = load_anomalies(tmp_path / "me.npz", (2, 3))
    assert a.shape == (4, 6) and float(a.abs().max()) == 0.0  # identical samples: no anomaly


pytest.importorskip("dinosaur")
RUN = ["run.cycles=3", "filter.particles=4", "sampler.steps=2", "run.micro_batch=4", "run.free_baseline=false"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from pipeline.data import sphere

    out = tmp_path_factory.mktemp("emu")
    sphere.make_sphere(out, {"days": 1, "spinup_days": sphere.SHIPPED_SPINUP, "seed": 5, "truth": "emulator",
                             "sampler_steps": 2})
    return out


def test_model_error_command_and_inflated_run(twin, tmp_path):
    """`diffda model-error` samples truth - mean forecast; the run with additive inflation writes the same
    first analysis (the perturbation is of the carried ensemble) and differs afterwards; a missing
    sample file is refused before anything is written."""
    import xarray as xr

    from pipeline.cli import main
    from pipeline.commands.run import EMBEDDED_DEFAULT
    from pipeline.config import load_config
    from pipeline.run import assimilate

    me = tmp_path / "me.npz"
    assert main(["model-error", "--data", str(twin), "--samples", "3", "--stride", "1", "--out", str(me),
                 "--set", "sampler.steps=2"]) == 0
    with np.load(me) as f:
        errors = f["errors"].astype(np.float64)
    assert errors.shape == (3, 12, 32, 64) and np.isfinite(errors).all()
    # the truth is sampled from the emulator: the error is its one-step spread, about 0.05-0.1 normalised
    assert 0.005 < float(np.sqrt((errors**2).mean())) < 0.5
    plain = assimilate(load_config(EMBEDDED_DEFAULT, [*RUN, "filter.additive_inflation=0"]), twin, tmp_path / "plain",
                       fresh=True)
    cfg = load_config(EMBEDDED_DEFAULT, [*RUN, "filter.additive_inflation=1.0", f"filter.model_error={me}"])
    inflated = assimilate(cfg, twin, tmp_path / "inflated", fresh=True)
    a = xr.open_zarr(tmp_path / "plain" / "analysis.zarr").rmse_analysis.values
    b = xr.open_zarr(tmp_path / "inflated" / "analysis.zarr").rmse_analysis.values
    assert a[0] == b[0] and not np.allclose(a[1:], b[1:])
    assert plain.metrics and inflated.metrics
    bad = load_config(EMBEDDED_DEFAULT, [*RUN, "filter.additive_inflation=1.0", f"filter.model_error={tmp_path}/x.npz"])
    with pytest.raises(DiffdaError, match="filter.model_error"):
        assimilate(bad, twin, tmp_path / "refused", fresh=True)
    assert not (tmp_path / "refused" / "analysis.zarr").exists()
