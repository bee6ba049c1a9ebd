"""Noise schedules ``schedule(t) -> (alpha_t, sigma_t)`` against their closed forms.

Tolerances: float64 evaluations of closed forms agree to rounding, ~1e-15 relative; we allow 1e-12.
"""

import math

import pytest
import torch

from pipeline.diffusion.schedules import EDM, VE, VPCosine, VPLinear, make_schedule

SCHEDULES = {"vp-linear": VPLinear(), "vp-cosine": VPCosine(), "ve": VE(), "edm": EDM()}
T = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)


def test_vp_linear_endpoints_and_integral():
    s = VPLinear(beta_min=0.1, beta_max=20.0)
    alpha, sigma = s(T)
    assert alpha[0] == 1.0 and sigma[0] == 0.0
    # alpha_t = exp(-1/2 int_0^t beta(u) du), beta linear in u: the trapezoid rule is exact for it
    beta = 0.1 + T * (20.0 - 0.1)
    integral = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(beta, T)])
    assert torch.allclose(alpha, torch.exp(-0.5 * integral), rtol=1e-12, atol=0)
    assert math.isclose(float(alpha[-1]), math.exp(-(20.0 - 0.1) / 4 - 0.1 / 2), rel_tol=1e-12)


def test_vp_cosine_endpoints():
    s = VPCosine(s=0.008, alpha_min=1e-3)
    alpha, sigma = s(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert math.isclose(float(alpha[0]), 1.0, rel_tol=1e-12) and float(sigma[0]) < 1e-7
    assert float(alpha[1]) == 1e-3  # cos(pi/2) = 0 is clipped to alpha_min
    assert math.isclose(float(sigma[1]), math.sqrt(1 - 1e-6), rel_tol=1e-12)


@pytest.mark.parametrize("schedule", [VE(sigma_min=1e-3, sigma_max=100.0), EDM(sigma_min=2e-3, sigma_max=80.0)],
                         ids=["ve", "edm"])
def test_variance_exploding_endpoints(schedule):
    alpha, sigma = schedule(T)
    assert torch.all(alpha == 1.0)
    assert math.isclose(float(sigma[0]), schedule.sigma_min, rel_tol=1e-12)
    assert math.isclose(float(sigma[-1]), schedule.sigma_max, rel_tol=1e-12)


def test_edm_is_uniform_in_sigma_to_the_one_over_rho():
    s = EDM(rho=7.0)
    _, sigma = s(T)
    root = sigma ** (1 / 7.0)
    assert torch.allclose(root.diff(), root.diff()[:1].expand(len(T) - 1), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_monotone_and_snr_decreasing(name):
    alpha, sigma = SCHEDULES[name](T)
    assert torch.all(alpha.diff() <= 0), "alpha_t must not increase"
    assert torch.all(sigma.diff() > 0), "sigma_t must increase"
    snr = alpha[1:] / sigma[1:]
    assert torch.all(snr.diff() < 0), "alpha_t / sigma_t must decrease strictly"


@pytest.mark.parametrize("name", ["vp-linear", "vp-cosine"])
def test_variance_preserving(name):
    alpha, sigma = SCHEDULES[name](T)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(T), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_dtype_and_shape_follow_t(name):
    for dtype in (torch.float32, torch.float64):
        t = torch.rand(4, 1, 1, dtype=dtype)
        alpha, sigma = SCHEDULES[name](t)
        assert alpha.dtype == sigma.dtype == dtype
        assert alpha.shape == sigma.shape == t.shape


def test_make_schedule():
    s = make_schedule("ve", sigma_max=50.0)
    assert isinstance(s, VE) and s.sigma_max == 50.0
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("cosine")
