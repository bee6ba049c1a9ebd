"""pf-local (pipeline/filters/pf_local.py): its pieces against the global ones, and its reduction to
the global optimal-proposal PF at an infinite radius."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.config import ConfigError, load_config
from pipeline.filters.pf_local import adaptive_alpha_columns, local_systematic, netf_transform, restore_spread
from pipeline.filters.resampling import systematic
from pipeline.filters.tempering import adaptive_alpha
from pipeline.run import assimilate


def test_local_systematic_is_systematic_per_row() -> None:
    g = torch.Generator().manual_seed(3)
    lw = torch.log_softmax(torch.randn(5, 12, generator=g, dtype=torch.float64) * 2, 1)
    a = local_systematic(lw, 0.37)
    for p in range(5):
        assert torch.equal(a[p], systematic(torch.exp(lw[p]), 0.37))


def test_restore_spread_hits_its_target_spread() -> None:
    """Step 4b: the rescaled anomalies have spread ``inflation (a sigma^f + (1 - a) sigma^w)`` per field
    and column exactly, keep the resampled mean, and leave a zero-spread column alone."""
    g = torch.Generator().manual_seed(5)
    n, f, q = 8, 3, 4
    prior = torch.randn(n, f, q, generator=g, dtype=torch.float64)
    lw = torch.log_softmax(torch.randn(n, q, generator=g, dtype=torch.float64), 0)
    resampled = prior[torch.tensor([0, 0, 1, 2, 2, 2, 5, 7])].clone()
    resampled[:, :, 3] = prior[4, :, 3]  # one parent everywhere: no spread to rescale
    out = restore_spread(prior, resampled, lw, 0.5, 1.1)
    w = torch.exp(lw)[:, None, :]
    mean_w = (w * prior).sum(0)
    sigma_w = torch.sqrt((w * (prior - mean_w) ** 2).sum(0))
    target = 1.1 * (0.5 * prior.std(0, unbiased=False) + 0.5 * sigma_w)
    assert torch.allclose(out.std(0, unbiased=False)[:, :3], target[:, :3], rtol=1e-12)
    assert torch.allclose(out.mean(0), resampled.mean(0), rtol=0, atol=1e-12)
    assert torch.equal(out[:, :, 3], resampled[:, :, 3])


def test_netf_transform_gives_the_weighted_mean_and_covariance() -> None:
    """The NETF (Tödter & Ahrens 2015): new members with the weighted mean and covariance to round-off;
    uniform weights leave the members as they are."""
    g = torch.Generator().manual_seed(6)
    n, f = 10, 7
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    lw = torch.log_softmax(2 * torch.randn(3, n, generator=g, dtype=torch.float64), 1)
    lw[2] = -np.log(n)
    T = netf_transform(lw)
    for p in range(3):
        w = torch.exp(lw[p])
        xa = T[p].T @ x  # x~_j = sum_a x_a T[a, j]
        mean_w = w @ x
        cov_w = (x - mean_w).T @ torch.diag(w) @ (x - mean_w)
        assert torch.allclose(xa.mean(0), mean_w, atol=1e-12)
        assert torch.allclose((xa - xa.mean(0)).T @ (xa - xa.mean(0)) / n, cov_w, atol=1e-12)
    assert torch.allclose(T[2], torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_adaptive_alpha_columns_matches_the_scalar_rule() -> None:
    g = torch.Generator().manual_seed(4)
    n = 50
    prior = torch.full((n,), -float(np.log(n)), dtype=torch.float64)
    lik = torch.randn(6, n, generator=g, dtype=torch.float64) * torch.tensor([0.01, 1, 5, 20, 80, 300.0])[:, None]
    got = adaptive_alpha_columns(prior, lik, (0.2, 0.25))
    want = torch.tensor([adaptive_alpha(prior, lik[p], (0.2, 0.25)) for p in range(6)], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
    assert got[0] == 1.0 and bool((got[2:] < 1).all())


def test_config_edge() -> None:
    for bad, key in (("filter.localization_radius=0", "filter.localization_radius"),
                     ("filter.localization_radius=-3", "filter.localization_radius"),
                     ("filter.static_radius=nope", "filter.static_radius.* 'auto'"),
                     ("filter.localization_spacings=0", "filter.localization_spacings"),
                     ("filter.rtps=1.5", "filter.rtps"), ("filter.rtps=-0.1", "filter.rtps")):
        with pytest.raises(ConfigError, match=key):
            load_config(overrides=[bad])
    cfg = load_config(overrides=["filter.method=letkf", "filter.localization_radius=7.28", "filter.rtps=0.5"])
    assert cfg.filter.localization_radius == 7.28 and cfg.filter.rtps == 0.5
    assert load_config().filter.localization_radius is None
    assert load_config(overrides=["filter.localization_radius=auto"]).filter.localization_radius == "auto"


@pytest.fixture(scope="module")
def l96(tmp_path_factory):
    from pipeline.data.twins import make_twin

    d = tmp_path_factory.mktemp("l96")
    make_twin("lorenz96", d, {"cycles": 8})
    return d


COMMON = ["data.preset=lorenz96", "filter.particles=9", "sampler.steps=4", "filter.weights=seed", "run.members=true"]


@pytest.mark.parametrize("tempering", ["none", "adaptive"])
def test_infinite_radius_is_the_global_pf(l96, tmp_path, tempering: str) -> None:
    """No radius: the same weights in every column, the global systematic ancestors, no smoothing:
    the optimal-proposal PF resampling every cycle (threshold 1), member for member."""
    extra = [f"filter.tempering={tempering}"]
    glob = assimilate(load_config(overrides=[*COMMON, *extra, "filter.method=pf-optimal",
                                             "filter.resample_threshold=1.0"]), l96, tmp_path / "g", fresh=True)
    loc = assimilate(load_config(overrides=[*COMMON, *extra, "filter.method=pf-local"]), l96, tmp_path / "l", fresh=True)
    a, b = (xr.open_zarr(r.out_dir / "analysis.zarr").load() for r in (glob, loc))
    assert a.resampled.values.all()
    for v in ("x_members", "x", "ess", "alpha"):
        assert float(np.abs(a[v].values - b[v].values).max()) <= 1e-12, v


def test_localisation_keeps_more_particles_alive(l96, tmp_path) -> None:
    """With radius 4 each column weighs ~8 observations instead of 40: the mean local ESS is higher
    than the global ESS in every cycle (the point of localising)."""
    glob = assimilate(load_config(overrides=[*COMMON, "filter.method=pf-local"]), l96, tmp_path / "g", fresh=True)
    loc = assimilate(load_config(overrides=[*COMMON, "filter.method=pf-local", "filter.localization_radius=4"]),
                     l96, tmp_path / "l", fresh=True)
    a, b = (xr.open_zarr(r.out_dir / "analysis.zarr").load() for r in (glob, loc))
    assert bool((b.ess.values > a.ess.values).all())
