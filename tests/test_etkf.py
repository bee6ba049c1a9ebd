"""ETKF analysis = Kalman analysis with the ensemble's own mean and covariance (linear H).

For a forecast ensemble with sample mean xbar and sample covariance P_f (1/(N-1)), the ETKF
analysis ensemble has exactly the Kalman mean and covariance for (xbar, P_f): float64, 1e-10.
"""

import torch

from pipeline.diffusion.observation import Observation
from pipeline.filters.etkf import etkf_analysis


def test_etkf_equals_kalman_with_sample_covariance():
    g = torch.Generator().manual_seed(1)
    n, d = 30, 6
    xf = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, d, dtype=torch.float64) + 3
    y_field = torch.full((d,), float("nan"), dtype=torch.float64)
    y_field[::2] = torch.randn(3, generator=g, dtype=torch.float64) + 3
    obs = Observation.from_field(y_field, 0.3)
    xa = etkf_analysis(xf, obs, inflation=1.0)
    xbar, A = xf.mean(0), xf - xf.mean(0)
    Pf = A.T @ A / (n - 1)
    H = torch.zeros(3, d, dtype=torch.float64)
    H[torch.arange(3), torch.arange(0, d, 2)] = 1
    R = 0.3 * torch.eye(3, dtype=torch.float64)
    K = Pf @ H.T @ torch.linalg.inv(H @ Pf @ H.T + R)
    mu_a = xbar + K @ (obs.y - H @ xbar)
    Pa = (torch.eye(d, dtype=torch.float64) - K @ H) @ Pf
    Aa = xa - xa.mean(0)
    assert torch.allclose(xa.mean(0), mu_a, atol=1e-10)
    assert torch.allclose(Aa.T @ Aa / (n - 1), Pa, atol=1e-10)


def test_inflation_scales_prior_spread():
    g = torch.Generator().manual_seed(2)
    xf = torch.randn(20, 4, generator=g, dtype=torch.float64)
    obs = Observation.from_field(torch.full((4,), float("nan"), dtype=torch.float64), 1.0)
    obs_none = Observation(obs.y, obs.variance, obs.operator)
    # no observation at all: the analysis is the inflated forecast
    xa = etkf_analysis(xf, obs_none, inflation=1.1)
    assert torch.allclose(xa - xa.mean(0), 1.1 * (xf - xf.mean(0)), atol=1e-12)
