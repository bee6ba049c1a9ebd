"""LETKF (pipeline/filters/letkf.py) and the Gaspari–Cohn localisation (pipeline/filters/localisation.py)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.diffusion.observation import Observation, ObservationOperator
from pipeline.distributed.comm import LocalComm
from pipeline.filters.etkf import etkf_analysis
from pipeline.filters.letkf import LETKF, column_analysis
from pipeline.filters.localisation import (dapper_radius, gaspari_cohn, great_circle_km, local_observations,
                                           observation_spacing, resolve_radius, ring,
                                           ring_distances, sphere)


def test_gaspari_cohn_values() -> None:
    r = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    # eq. 4.10 of Gaspari & Cohn (1999) by hand: 1 - 5/12 + 5/64 + 1/32 - 1/128 at r = 1/2; 5/24 at r = 1
    want = [1.0, 1 - 5 / 12 + 5 / 64 + 1 / 32 - 1 / 128, 5 / 24,
            4 - 7.5 + 5 / 3 * 2.25 + 5 / 8 * 3.375 - 0.5 * 5.0625 + 7.59375 / 12 - 2 / 4.5, 0.0, 0.0]
    assert torch.allclose(gaspari_cohn(r), torch.tensor(want, dtype=torch.float64), atol=1e-15)
    # continuous at r = 1 and r = 2, monotone in between
    e = 1e-9
    assert abs(float(gaspari_cohn(torch.tensor(1 - e)) - gaspari_cohn(torch.tensor(1 + e)))) < 1e-8
    x = torch.linspace(0, 2, 201, dtype=torch.float64)
    assert bool((gaspari_cohn(x).diff() <= 1e-15).all())
    # DAPPER's convention: c = 1.82 loc_rad; its docstring says the taper is exp(-1/2) = 0.607 at
    # d = loc_rad, the Gaspari-Cohn value there is 0.634 (1.82 is a Gaussian-matching factor, not exact)
    assert abs(float(gaspari_cohn(torch.tensor(4.0 / dapper_radius(4.0)))) - 0.6336) < 1e-4
    assert abs(float(gaspari_cohn(torch.tensor(1 / 1.82))) - math.exp(-0.5)) < 0.03


def test_distances() -> None:
    d = ring_distances(40)
    assert d[0, 39] == 1 and d[0, 20] == 20 and d[3, 38] == 5 and torch.equal(d, d.T)
    km = great_circle_km([0.0, 45.0], [0.0, 90.0, 180.0, 270.0])  # p = i W + j
    quarter = math.pi / 2 * 6371.0
    assert abs(float(km[0, 1]) - quarter) < 1e-6 and abs(float(km[0, 2]) - 2 * quarter) < 1e-6
    assert abs(float(km[0, 4]) - quarter / 2) < 1e-6  # (0, 0) to (45 N, 0)
    assert sphere([-10.0, 10.0], [0.0, 180.0]).n_columns == 4


def test_radius_from_the_observation_spacing() -> None:
    """auto: c = spacings * (A / n)^(1/dim). A global grid's area is 4 pi R^2 (to round-off); thinning
    by 2 in each direction doubles the spacing; a ring of 40 observed every other point has spacing 2;
    repeated columns (levels of one column) count once."""
    lat = torch.arange(-87.1875, 90, 5.625, dtype=torch.float64)
    lon = torch.arange(0, 360, 5.625, dtype=torch.float64)
    geo = sphere(lat, lon)
    assert abs(geo.extent / (4 * math.pi * 6371.0**2) - 1) < 1e-12 and geo.dim == 2
    idx = torch.arange(geo.n_columns).reshape(32, 64)
    every2, every4 = idx[::2, ::2].flatten(), idx[::4, ::4].flatten()
    d2 = observation_spacing(geo, torch.cat([every2, every2]))  # two levels of the same columns
    assert abs(d2 - math.sqrt(4 * math.pi * 6371.0**2 / 512)) < 1e-6  # 998 km
    assert abs(observation_spacing(geo, every4) / d2 - 2) < 1e-12
    assert abs(resolve_radius("auto", 0.75, geo, every2) - 0.75 * d2) < 1e-9
    assert resolve_radius(750.0, 0.75, geo, every2) == 750.0 and resolve_radius(None, 0.75, geo, every2) is None
    assert observation_spacing(ring(40), torch.arange(0, 40, 2)) == 2.0
    half = sphere(lat[16:], lon)  # the northern hemisphere: half the area
    assert abs(half.extent / geo.extent - 0.5) < 1e-12
    with pytest.raises(ValueError, match="no observed column"):
        observation_spacing(geo, torch.tensor([], dtype=torch.long))


def test_auto_radius_without_observations_is_refused_by_key() -> None:
    """A first cycle without observations cannot give a spacing: refused naming the key, before a store."""
    from types import SimpleNamespace

    from pipeline.config import load_config
    from pipeline.errors import InputError
    from pipeline.run import localisation

    empty = Observation(torch.zeros(0), torch.ones(0), ObservationOperator(torch.zeros(0, dtype=torch.long), "identity"))
    problem = SimpleNamespace(state_shape=(40,), observation=lambda k: empty)
    cfg = load_config(overrides=["filter.method=letkf", "filter.localization_radius=auto"])
    with pytest.raises(InputError, match="filter.localization_radius=auto .* has none"):
        localisation(cfg, problem)
    geometry, radius = localisation(load_config(overrides=["filter.method=letkf", "filter.localization_radius=4"]),
                                    problem)
    assert radius == {"localization_radius": 4.0} and geometry.n_columns == 40
    assert localisation(load_config(overrides=["filter.method=free"]), problem) == (None, {})


def test_local_observations_support() -> None:
    geo = ring(40)
    local = local_observations(geo, torch.arange(0, 40, 2), 3.0)  # c = 3: support |d| < 6
    coef = torch.zeros(40, 20, dtype=torch.float64)
    coef.scatter_add_(1, local.index, local.coef)
    want = gaspari_cohn(geo.distances[:, ::2] / 3.0)
    assert torch.allclose(coef, want, atol=0) and local.index.shape[1] == 6


def problem(n: int = 10, d: int = 40, seed: int = 0, fn: str = "identity", every: int = 1):
    g = torch.Generator().manual_seed(seed)
    xf = 3 * torch.randn(n, d, generator=g, dtype=torch.float64) + torch.randn(d, generator=g, dtype=torch.float64)
    index = torch.arange(0, d, every)
    y = torch.randn(len(index), generator=g, dtype=torch.float64) * 2
    var = 0.5 + torch.rand(len(index), generator=g, dtype=torch.float64)
    return xf, Observation(y, var, ObservationOperator(index, fn))


def letkf(radius, n=10, d=40, inflation=1.0, rtps=0.0, history=1) -> LETKF:
    return LETKF(LocalComm(), None, (d,), ring(d), n, radius, inflation, rtps, history)


@pytest.mark.parametrize("fn, every, inflation", [("identity", 1, 1.0), ("abs", 3, 1.07)])
def test_infinite_radius_is_the_etkf(fn: str, every: int, inflation: float) -> None:
    xf, obs = problem(fn=fn, every=every)
    ids = torch.arange(10)
    got = letkf(None, inflation=inflation).analysis(ids, xf, xf, obs)
    want = etkf_analysis(xf, obs, inflation)
    assert float((got - want).abs().max()) < 1e-12
    # a radius far beyond the ring is the same thing (taper 1 - O(d^2/c^2) ~ 1e-9 here)
    far = letkf(1e5, inflation=inflation).analysis(ids, xf, xf, obs)
    assert float((far - want).abs().max()) < 1e-6


def test_columns_beyond_the_support_are_unchanged() -> None:
    xf, obs = problem()
    index = torch.arange(0, 5)  # observe components 0..4 only
    obs = Observation(obs.y[index], obs.variance[index], ObservationOperator(index))
    xa = letkf(2.0).analysis(torch.arange(10), xf, xf, obs)  # support 4: columns 9..35 see nothing
    assert float((xa[:, 9:36] - xf[:, 9:36]).abs().max()) < 1e-13  # the identity transform, to round-off
    assert float((xa[:, :5] - xf[:, :5]).abs().max()) > 0.1


def test_rtps_restores_prior_spread() -> None:
    xf, obs = problem()
    xa = letkf(4.0, rtps=1.0).analysis(torch.arange(10), xf, xf, obs)
    assert torch.allclose(xa.std(0), xf.std(0), rtol=1e-12)
    half = letkf(4.0, rtps=0.5).analysis(torch.arange(10), xf, xf, obs)
    plain = letkf(4.0).analysis(torch.arange(10), xf, xf, obs)
    assert torch.allclose(half.std(0), 0.5 * (plain.std(0) + xf.std(0)), rtol=1e-12)
    assert torch.allclose(half.mean(0), plain.mean(0), atol=1e-12)  # RTPS keeps the mean


def test_no_cost_smoother_updates_the_past_with_the_same_weights() -> None:
    xf, obs = problem(seed=1)
    past = xf.flip(0) * 0.5 + 1.0
    x_new = torch.stack((past, xf), 1)  # [n, K=2, D]
    got = letkf(None, history=2).analysis(torch.arange(10), xf, x_new, obs)
    assert float((got[:, 1] - etkf_analysis(xf, obs, 1.0)).abs().max()) < 1e-12
    # the same (global) transform applied to the past: T from the newest state
    from pipeline.filters.letkf import local_transforms
    from pipeline.filters.localisation import local_observations as lo

    hx = xf
    Y, dvec = hx - hx.mean(0), obs.y - hx.mean(0)
    T = local_transforms(Y, dvec, 1 / obs.variance, lo(ring(40), torch.arange(40), None))
    assert float((got[:, 0] - column_analysis(past[:, None, :], T, 1.0, 0.0)[:, 0]).abs().max()) < 1e-12
