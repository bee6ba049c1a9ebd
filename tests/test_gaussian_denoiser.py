"""The exact Gaussian denoiser against brute-force conditioning of the joint Gaussian.

Transition ``x' = m(x) + xi``, ``xi ~ N(0, Q)``, ``Q = diag(q)``; noising ``x_t = alpha x' + sigma eps``.
The joint of ``(x', x_t)`` given ``x`` is Gaussian with covariance ``[[Q, alpha Q], [alpha Q, alpha^2 Q
+ sigma^2 I]]``, so ``E[x' | x_t] = m + C_12 C_22^-1 (x_t - alpha m)`` and ``V[x' | x_t] = C_11 - C_12
C_22^-1 C_21`` -- computed here with dense float64 solves. Tolerance 1e-12: both sides are a few
float64 operations on O(1) numbers (condition numbers below 1e4 at the times used).
"""

import pytest
import torch

from pipeline.diffusion.denoiser import score
from pipeline.diffusion.schedules import EDM, VPCosine, VPLinear
from pipeline.models.dynamics import Linear, Lorenz96
from pipeline.models.gaussian import GaussianDenoiser

D = 6
TIMES = [1e-3, 0.1, 0.5, 0.9, 1.0]


def brute_force(m: torch.Tensor, q: torch.Tensor, alpha: float, sigma: float, x_t: torch.Tensor):
    """Conditional mean ``[B, D]`` and covariance ``[D, D]`` of x' given x_t from the joint covariance."""
    Q = torch.diag(q)
    C11, C12, C22 = Q, alpha * Q, alpha**2 * Q + sigma**2 * torch.eye(D, dtype=torch.float64)
    mean = m + torch.linalg.solve(C22, (x_t - alpha * m).T).T @ C12.T
    cov = C11 - C12 @ torch.linalg.solve(C22, C12.T)
    return mean, cov


@pytest.mark.parametrize("q", [0.1, torch.linspace(0.05, 2.0, D, dtype=torch.float64)], ids=["scalar", "vector"])
@pytest.mark.parametrize("schedule", [VPCosine(), VPLinear(), EDM()], ids=["vp-cosine", "vp-linear", "edm"])
def test_matches_conditional_gaussian(q, schedule):
    g = torch.Generator().manual_seed(0)
    dyn = Lorenz96(steps=1)  # any m(x): the formula only uses m
    den = GaussianDenoiser(schedule, dyn, q)
    x = 3 * torch.randn(5, D, generator=g, dtype=torch.float64)
    qv = torch.as_tensor(q, dtype=torch.float64).expand(D)
    for t in TIMES:
        alpha, sigma = (float(v) for v in schedule(torch.tensor(t, dtype=torch.float64)))
        x_t = alpha * dyn(x) + (alpha**2 * qv + sigma**2).sqrt() * torch.randn(5, D, generator=g, dtype=torch.float64)
        mean, cov = brute_force(dyn(x), qv, alpha, sigma, x_t)
        out = den(x_t, torch.tensor(t, dtype=torch.float64), x)
        assert torch.allclose(out, mean, rtol=0, atol=1e-12 * max(1.0, float(mean.abs().max())))
        assert torch.allclose(torch.diag(cov).expand(5, D), den.variance(x_t, torch.tensor(t, dtype=torch.float64)), rtol=0, atol=1e-12)
        assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-15)  # diagonal Q: diagonal V


def test_per_particle_times_and_tweedie_second_moment():
    """``t`` as ``[B]``; Tweedie: ``V[x' | x_t] = sigma^2 / alpha * d d / d x_t`` (the Jacobian, by autograd)."""
    schedule, q = VPCosine(), 0.1
    den = GaussianDenoiser(schedule, Linear(0.95, 0.25), q)
    g = torch.Generator().manual_seed(1)
    x, x_t = torch.randn(2, 4, D, generator=g, dtype=torch.float64)
    t = torch.tensor([1e-3, 0.3, 0.7, 1.0], dtype=torch.float64)
    out = den(x_t, t, x)
    for b in range(4):
        assert torch.allclose(out[b], den(x_t[b:b + 1], t[b], x[b:b + 1])[0], rtol=0, atol=1e-14)
        alpha, sigma = schedule(t[b])
        jac = torch.autograd.functional.jacobian(lambda z: den(z[None], t[b], x[b:b + 1])[0], x_t[b])
        v = den.variance(x_t[b:b + 1], t[b])[0]
        assert torch.allclose(sigma**2 / alpha * jac, torch.diag(v), rtol=1e-12, atol=1e-14)


def test_score_is_the_noisy_marginal_score():
    """``grad log N(x_t; alpha m, (alpha^2 q + sigma^2) I) = -(x_t - alpha m) / (alpha^2 q + sigma^2)``."""
    schedule, q, dyn = VPLinear(), 0.3, Linear()
    den = GaussianDenoiser(schedule, dyn, q)
    g = torch.Generator().manual_seed(2)
    x, x_t = torch.randn(2, 3, D, generator=g, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    alpha, sigma = schedule(t)
    expected = -(x_t - alpha * dyn(x)) / (alpha**2 * q + sigma**2)
    assert torch.allclose(score(den, x_t, t, x), expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(score(den, x_t, 0.4, x), expected, rtol=1e-12, atol=1e-14)  # a float t


def test_zero_noise_and_dtype():
    den = GaussianDenoiser(VPCosine(), Linear(), 0.0)
    x = torch.randn(3, D, dtype=torch.float64)
    assert torch.equal(den(torch.randn(3, D, dtype=torch.float64), torch.tensor(0.5), x), Linear()(x))
    den32 = GaussianDenoiser(VPCosine(), Linear(), 0.1)
    out = den32(torch.randn(3, D), torch.tensor(0.5), torch.randn(3, D))
    assert out.dtype == torch.float32
