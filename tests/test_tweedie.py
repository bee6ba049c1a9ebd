"""Tweedie's observation-space covariance ``A V A^T`` against closed forms and brute force.

- Gaussian transition (diagonal ``Q = q I``), selection ``H``: ``V = q sigma^2 / (alpha^2 q + sigma^2) I``
  exactly, so ``A V A^T = H V H^T`` (tolerance 1e-12: a handful of float64 operations).
- Correlated Gaussian prior: ``V = Sigma - alpha^2 Sigma (alpha^2 Sigma + sigma^2 I)^-1 Sigma``.
- Nonlinear ``H`` (arctan, square) and a nonlinear denoiser (KDE): ``sigma^2/alpha A J A^T`` with the
  Jacobian ``J`` by brute force (``torch.autograd.functional.jacobian``), ``A = diag(f'(x_hat[index]))``;
  tolerance 1e-12 relative (the same products in another order), symmetrised ``J``.
- At ``t = 1`` (VP-cosine, ``alpha_1 = 1e-3``) the filter's inflated weight ``N(y | H m, Sigma_y + H V H^T)``
  is the exact ``p(y | x) = N(y | H m, H Q H^T + Sigma_y)`` up to ``V / q - 1 = -alpha_1^2 q / (alpha_1^2 q
  + sigma_1^2) ~ -1e-7``.
"""

import math

import pytest
import torch

from gaussian_oracle import FullGaussianDenoiser
from pipeline.diffusion.observation import Observation
from pipeline.diffusion.schedules import VPCosine, VPLinear
from pipeline.diffusion.tweedie import obs_covariance
from pipeline.models.dynamics import Linear
from pipeline.models.gaussian import GaussianDenoiser
from pipeline.models.kde import KDEDenoiser

D, Q, F64 = 10, 0.1, torch.float64


def selection(index) -> torch.Tensor:
    return torch.eye(D, dtype=F64)[index]


def operator(index, fn: str = "identity"):
    y = torch.full((D,), float("nan"), dtype=F64)
    y[index] = 0.0
    return Observation.from_field(y, 1.0, fn).operator


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_gaussian_denoiser_closed_form(chunk):
    schedule = VPLinear()
    q = torch.linspace(0.05, 0.5, D, dtype=F64)
    den = GaussianDenoiser(schedule, Linear(), q)
    index = [0, 3, 4, 7, 9]
    Hs, op = selection(index), operator(index)
    g = torch.Generator().manual_seed(0)
    x, x_t = torch.randn(2, 4, D, generator=g, dtype=F64)
    for t in (1e-3, 0.2, 0.6, 1.0):
        t = torch.tensor(t, dtype=F64)
        alpha, sigma = schedule(t)
        V = torch.diag(q * sigma**2 / (alpha**2 * q + sigma**2))
        cov = obs_covariance(den, x_t, t, x, op, chunk=chunk)
        assert cov.shape == (4, 5, 5) and cov.dtype == F64
        assert torch.allclose(cov, (Hs @ V @ Hs.T).expand(4, -1, -1), rtol=1e-12, atol=1e-15)
    t = torch.tensor([1e-3, 0.3, 0.6, 1.0], dtype=F64)  # per-particle times
    cov = obs_covariance(den, x_t, t, x, op, chunk=chunk)
    for b in range(4):
        alpha, sigma = schedule(t[b])
        V = torch.diag(q * sigma**2 / (alpha**2 * q + sigma**2))
        assert torch.allclose(cov[b], Hs @ V @ Hs.T, rtol=1e-12, atol=1e-15)


def test_correlated_gaussian_prior():
    schedule = VPCosine()
    g = torch.Generator().manual_seed(1)
    L = torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D)
    den = FullGaussianDenoiser(schedule, 0.05 * torch.eye(D, dtype=F64) + 0.2 * L @ L.T)
    index = [1, 2, 5, 8]
    Hs = selection(index)
    x_t, x = torch.randn(2, 3, D, generator=g, dtype=F64)
    for t in (0.05, 0.5, 0.95):
        cov = obs_covariance(den, x_t, torch.tensor(t, dtype=F64), x, operator(index), chunk=3)
        expected = Hs @ den.covariance(t) @ Hs.T
        assert torch.allclose(cov, expected.expand(3, -1, -1), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("fn", ["arctan", "square"])
def test_nonlinear_operator_and_denoiser_against_brute_force(fn):
    g = torch.Generator().manual_seed(2)
    x_prev = torch.randn(48, 5, generator=g, dtype=F64)
    den = KDEDenoiser(VPCosine(), x_prev, torch.sin(x_prev) + 0.2 * torch.randn(48, 5, generator=g, dtype=F64))
    y = torch.tensor([0.1, float("nan"), -0.2, 0.3, float("nan")], dtype=F64)
    op = Observation.from_field(y, 1.0, fn).operator
    x, x_t = torch.randn(2, 3, 5, generator=g, dtype=F64)
    t = torch.tensor(0.4, dtype=F64)
    alpha, sigma = den.schedule(t)
    cov = obs_covariance(den, x_t, t, x, op)
    assert torch.allclose(cov, obs_covariance(den, x_t, t, x, op, chunk=2), rtol=1e-13, atol=1e-16)
    for b in range(3):
        J = torch.autograd.functional.jacobian(lambda z: den(z[None], t, x[b:b + 1])[0], x_t[b])
        J = 0.5 * (J + J.T)  # symmetric for a posterior-mean denoiser, up to rounding
        A = torch.diag(op.derivative(den(x_t[b:b + 1], t, x[b:b + 1]))[0]) @ torch.eye(5, dtype=F64)[op.index]
        expected = sigma**2 / alpha * A @ J @ A.T
        assert torch.allclose(cov[b], expected, rtol=1e-12, atol=1e-14 * float(expected.abs().max()))
        assert torch.all(torch.linalg.eigvalsh(cov[b]) > -1e-12)  # a covariance: PSD


def test_inflated_weights_are_exact_for_the_linear_gaussian_twin():
    schedule = VPCosine()
    den = GaussianDenoiser(schedule, Linear(), Q)
    index = list(range(0, D, 2))
    Hs = selection(index)
    one = torch.ones((), dtype=F64)
    _, sigma_1 = schedule(one)
    x = torch.randn(4, D, dtype=F64)
    cov = obs_covariance(den, sigma_1 * torch.randn(4, D, dtype=F64), one, x, operator(index))
    exact = Q * Hs @ Hs.T  # H Q H^T
    assert torch.allclose(cov, exact.expand(4, -1, -1), rtol=1e-6, atol=1e-15)


def test_one_forward_pass_no_grad_context_and_no_graph():
    den = FullGaussianDenoiser(VPCosine(), Q * torch.eye(D, dtype=F64))
    x_t = torch.randn(2, D, dtype=F64, requires_grad=True)
    with torch.no_grad():
        cov = obs_covariance(den, x_t, 0.5, torch.zeros(2, D, dtype=F64), operator([0, 1, 2, 3, 4, 5]), chunk=4)
    assert den.calls == 1  # O(M) VJPs share a single forward pass
    assert not cov.requires_grad and x_t.grad is None
    empty = obs_covariance(den, x_t, 0.5, torch.zeros(2, D, dtype=F64), operator([]))
    assert empty.shape == (2, 0, 0)
    with pytest.raises(ValueError):
        obs_covariance(den, x_t, 0.5, torch.zeros(2, D, dtype=F64), operator([0]), chunk=0)


class LinearDenoiser:
    """``x_hat = x_t W^T``: a stand-in for a learned denoiser whose Jacobian ``W`` is no covariance."""

    def __init__(self, W):
        self.schedule, self.W = VPCosine(), W

    def __call__(self, x_t, t, condition):
        return x_t @ self.W.T


def test_psd_projection_for_jacobians_that_are_not_covariances():
    g = torch.Generator().manual_seed(3)
    den = LinearDenoiser(torch.randn(D, D, generator=g, dtype=F64))
    x_t, op, one = torch.randn(2, D, generator=g, dtype=F64), operator([0, 2, 4, 6, 8]), torch.tensor(1.0, dtype=F64)
    raw = obs_covariance(den, x_t, one, x_t, op, psd=False)
    Hs, (alpha, sigma) = selection([0, 2, 4, 6, 8]), den.schedule(one)
    sym = 0.5 * (den.W + den.W.T)
    assert torch.allclose(raw, (sigma**2 / alpha * Hs @ sym @ Hs.T).expand(2, -1, -1), rtol=1e-12, atol=1e-12)
    assert float(torch.linalg.eigvalsh(raw).min()) < -1.0  # indefinite: amplified by 1 / alpha_1 = 1e3
    cov = obs_covariance(den, x_t, one, x_t, op)
    evals, evecs = torch.linalg.eigh(raw[0])
    assert torch.allclose(cov[0], evecs @ torch.diag(evals.clamp(min=0)) @ evecs.T, rtol=0, atol=1e-9)
    assert float(torch.linalg.eigvalsh(cov).min()) > -1e-9  # PSD to rounding (eigenvalues up to ~1e4)
    torch.linalg.cholesky(cov + 0.1 * torch.eye(5, dtype=F64))  # Sigma_y + A V A^T factorises
