"""Weighted CRPS by sorting equals the O(N^2) definition; RMSE and spread by hand."""

import torch

from pipeline.evaluate.scores import crps, rmse, spread


def test_crps_matches_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(17, 5, generator=g, dtype=torch.float64)
    w = torch.rand(17, generator=g, dtype=torch.float64)
    w = w / w.sum()
    y = torch.randn(5, generator=g, dtype=torch.float64)
    first = (w[:, None] * (x - y).abs()).sum(0)
    pair = 0.5 * (w[:, None, None] * w[None, :, None] * (x[:, None] - x[None]).abs()).sum((0, 1))
    assert abs(crps(x, w, y) - float((first - pair).mean())) < 1e-12


def test_crps_of_point_mass_is_absolute_error():
    x = torch.tensor([[2.0], [2.0]], dtype=torch.float64)
    assert abs(crps(x, torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)) - 1.5) < 1e-12


def test_rmse_spread():
    assert abs(rmse(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])) - (5.0**0.5)) < 1e-12
    assert abs(spread(torch.tensor([1.0, 9.0])) - 5.0**0.5) < 1e-12
