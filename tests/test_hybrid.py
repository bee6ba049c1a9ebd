"""The hybrid particle–Kalman transform of pf-local (pipeline/filters/hybrid.py): the Kalman step alone
is the ETKF, and the two steps together give the Kalman posterior of a linear-Gaussian problem."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.filters.hybrid import hybrid_gamma, kalman_after
from pipeline.filters.letkf import column_analysis, local_transforms
from pipeline.filters.localisation import LocalObs
from pipeline.filters.pf_local import netf_transform, per_obs_log_likelihood
from pipeline.filters.tempering import batched_ess
from pipeline.diffusion.observation import Observation


def everywhere(p: int, m: int) -> LocalObs:
    return LocalObs(torch.arange(m).expand(p, m).clone(), torch.ones(p, m, dtype=torch.float64))


def test_gamma_one_after_the_identity_is_the_etkf() -> None:
    """``T1 = I`` and ``gamma = 1``: the hybrid transform is the ETKF's (the LETKF's column analysis
    without inflation), to round-off."""
    g = torch.Generator().manual_seed(1)
    n, f, m = 12, 5, 3
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    hx = x[:, :m]  # observe the first m fields
    y = torch.randn(m, generator=g, dtype=torch.float64)
    r_inv = torch.full((m,), 2.0, dtype=torch.float64)
    T = kalman_after(torch.eye(n, dtype=torch.float64)[None], hx, y, r_inv, everywhere(1, m),
                     torch.ones(1, dtype=torch.float64))
    ours = T[0].T @ x
    ybar = hx.mean(0)
    T2 = local_transforms(hx - ybar, y - ybar, r_inv, everywhere(1, m))
    etkf = column_analysis(x[:, :, None], T2, 1.0, 0.0)[:, :, 0]
    assert torch.allclose(ours, etkf, atol=1e-12)


def test_hybrid_gives_the_kalman_posterior_of_a_gaussian_problem() -> None:
    """Prior ``N(0, B)`` in 2-D (correlation 0.8), the first component observed with variance ``r``:
    the NETF on ``p(y|x)^(1-gamma)`` then the ETKF on ``p(y|x)^gamma`` give the Kalman posterior's
    mean and covariance, within the Monte-Carlo error of the N samples (the weighted step has
    ``ESS`` effective samples: mean error ``sigma / sqrt(ESS)``, variance error ``var sqrt(2 / ESS)``;
    four of those)."""
    g = torch.Generator().manual_seed(2)
    n = 4000
    B = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(B).T
    r, y = 0.25, torch.tensor([1.2], dtype=torch.float64)
    obs = Observation(y=y, variance=torch.tensor([r], dtype=torch.float64), operator=None)
    hx = x[:, :1]
    ll = per_obs_log_likelihood(obs, hx)  # [N, 1]
    log_prior = torch.full((n,), -math.log(n), dtype=torch.float64)
    gamma = hybrid_gamma(ll.T, log_prior, 1.0)  # [1]
    assert 0.2 < float(gamma) < 0.9  # both steps take a real share
    lw = torch.log_softmax(log_prior + (1 - gamma) * ll[:, 0], 0)[None]
    ess = float(batched_ess(lw))
    T = kalman_after(netf_transform(lw), hx, y, torch.tensor([1 / r], dtype=torch.float64), everywhere(1, 1), gamma)
    xa = T[0].T @ x
    K = B[:, :1] / (B[0, 0] + r)
    mean = (K * y).reshape(2)
    cov = B - K @ B[:1, :]
    tol_mean = 4 * torch.sqrt(torch.diag(B) / ess)
    assert torch.all((xa.mean(0) - mean).abs() < tol_mean), (xa.mean(0), mean, tol_mean)
    cov_a = torch.cov(xa.T, correction=0)
    tol_var = 4 * math.sqrt(2 / ess) * torch.diag(B)
    assert torch.all((torch.diag(cov_a) - torch.diag(cov)).abs() < tol_var), (cov_a, cov)


def test_gamma_follows_the_ess() -> None:
    """``gamma = h (1 - ESS/N)``: 0 for uniform weights, toward ``h`` as they collapse."""
    n = 8
    prior = torch.full((n,), -math.log(n), dtype=torch.float64)
    lik = torch.stack([torch.zeros(n, dtype=torch.float64), torch.tensor([0.0] + [-50.0] * (n - 1), dtype=torch.float64)])
    gamma = hybrid_gamma(lik, prior, 0.8)
    assert torch.allclose(gamma, torch.tensor([0.0, 0.8 * (1 - 1 / n)], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("sets, key", [
    (["filter.method=pf-local", "filter.transform=resample", "filter.hybrid=0.5"], "filter.transform=netf"),
    (["filter.method=pf-local", "filter.transform=netf", "filter.tempering=adaptive", "filter.hybrid=0.5"],
     "filter.tempering=none"),
    (["filter.method=pf-local", "filter.transform=netf", "filter.hybrid=1.5"], "filter.hybrid"),
])
def test_config_refuses_a_hybrid_without_the_netf(sets: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, ["data.preset=lorenz96", *sets])


def test_other_methods_ignore_the_hybrid_weight() -> None:
    """As ``filter.transform``: a preset that sets it for pf-local still runs ``--set filter.method=letkf``."""
    assert load_config(None, ["data.preset=lorenz96", "filter.method=letkf", "filter.hybrid=1.0"]).filter.hybrid == 1.0
