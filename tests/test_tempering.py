"""Adaptive tempering: the largest alpha in (0, 1] whose ESS lies in the band (pipeline.filters.tempering)."""

import math

import torch

from pipeline.filters.tempering import adaptive_alpha, ess_of


def _lik(n: int, spread: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return spread * torch.randn(n, generator=g, dtype=torch.float64)


def test_alpha_is_one_when_the_ess_is_already_above_the_band():
    prior = torch.full((256,), -math.log(256), dtype=torch.float64)
    lik = _lik(256, 0.1)  # nearly flat: ESS ~ 254
    assert adaptive_alpha(prior, lik, (0.2, 0.25)) == 1.0


def test_collapsed_weights_are_tempered_into_the_band():
    """Log-likelihoods spread like M = 1536 observations (std ~ sqrt(M/2) ~ 28): ESS(1) ~ 1."""
    n = 256
    prior = torch.full((n,), -math.log(n), dtype=torch.float64)
    for seed in range(5):
        lik = _lik(n, 28.0, seed)
        assert ess_of(prior + lik) < 2
        alpha = adaptive_alpha(prior, lik, (50 / 256, 60 / 256))
        e = ess_of(prior + alpha * lik)
        assert 0 < alpha < 1
        assert 50 <= e <= 60, (alpha, e)


def test_alpha_is_the_largest_in_the_band():
    """ESS decreases in alpha here, so just above the returned alpha the ESS is at most the band's top."""
    n = 100
    prior = torch.full((n,), -math.log(n), dtype=torch.float64)
    lik = _lik(n, 10.0, 3)
    alpha = adaptive_alpha(prior, lik, (0.2, 0.25))
    assert ess_of(prior + alpha * lik) >= 0.2 * n
    assert ess_of(prior + min(1.0, alpha * 1.5) * lik) < 0.25 * n


def test_infinite_log_likelihoods_keep_zero_weight():
    n = 64
    prior = torch.full((n,), -math.log(n), dtype=torch.float64)
    lik = _lik(n, 20.0, 1)
    lik[:8] = -math.inf
    alpha = adaptive_alpha(prior, lik, (0.2, 0.25))
    w = torch.softmax(prior + alpha * lik, 0)
    assert float(w[:8].sum()) == 0.0
    assert 0.2 * n <= ess_of(prior + alpha * lik) <= 0.25 * n
