"""Likelihood guidance (DPS, SDA, MMPS) against exact answers.

Setting (design.md's linear-Gaussian twin): ``x' = m(x) + xi``, ``m`` = Linear(a=0.95, c=0.25),
``Q = q I`` with ``q = 0.1``, ``D = 12``, every second component observed with ``r = 0.25``. Then
``x' | x, y ~ N(m + K (y - H m), (I - K H) Q)``, ``K = Q H^T (H Q H^T + R)^-1`` (the optimal proposal).

- MMPS is exact for a Gaussian prior and linear H: with ``cg_iterations = M`` the guided denoiser
  *is* the posterior denoiser ``E[x' | x_t, x, y]`` (checked pointwise to 1e-9: float64 CG on a
  system with condition number < 2, so the solve is accurate to ~1e-14; 1e-9 leaves room), and the
  guided sampler's output law is the sampler's discretised law for the posterior target
  (``gaussian_oracle.sampler_law``; checked to 5 Monte-Carlo standard errors on every mean and
  covariance entry, and the discretised law against the optimal proposal to its first-order bias).
- DPS and SDA: with a diagonal Gaussian prior and a selection H all three likelihood scores are the
  same vector scaled per observation by ``r / cov_y``, ``cov_y = r`` (DPS), ``r + gamma sigma^2/alpha^2``
  (SDA), ``r + V`` (MMPS, ``V = q sigma^2 / (alpha^2 q + sigma^2)``), an exact identity we check to 1e-10;
  so they agree as ``sigma_t -> 0``, and sampling with them moves the mean toward the posterior.
- Nonlinear H (arctan, square) and a nonlinear denoiser (KDE, a Gaussian-mixture posterior mean):
  each method's likelihood gradient equals central finite differences (h = 1e-5, float64: truncation
  ~h^2 = 1e-10, rounding ~1e-16 / h = 1e-11, relative) of its own approximate log-likelihood with the
  covariance frozen at the evaluation point; tolerance 1e-6 relative.
"""

import math

import pytest
import torch

from gaussian_oracle import FullGaussianDenoiser, check_moments, gaussian_posterior, normal_draws, sampler_law
from pipeline.diffusion.guidance import DPS, MMPS, SDA, conjugate_gradient, make_guidance
from pipeline.diffusion.observation import Observation
from pipeline.diffusion.sampler import Sampler
from pipeline.diffusion.schedules import VPCosine, VPLinear
from pipeline.models.dynamics import Linear
from pipeline.models.gaussian import GaussianDenoiser
from pipeline.models.kde import KDEDenoiser
from pipeline.rng import ParticleNoise

D, Q, R, STRIDE, N = 12, 0.1, 0.25, 2, 20000
F64 = torch.float64
DYN = Linear(0.95, 0.25)
X_PREV = torch.linspace(-1.0, 1.0, D, dtype=F64)
H = torch.eye(D, dtype=F64)[::STRIDE]
M = len(H)


def observation(m: torch.Tensor, fn: str = "identity") -> Observation:
    """``y = m[::2] + offsets`` (offsets of 1-4 observation standard deviations), variance ``R``."""
    y_field = torch.full((D,), float("nan"), dtype=F64)
    y_field[::STRIDE] = m[::STRIDE] + torch.tensor([1.0, -0.5, 0.8, 2.0, -1.2, 0.3], dtype=F64)
    return Observation.from_field(y_field, R, fn)


def twin(schedule=VPCosine()):
    den = GaussianDenoiser(schedule, DYN, Q)
    m = DYN(X_PREV[None])[0]
    obs = observation(m)
    mu_post, cov_post = gaussian_posterior(m, Q * torch.eye(D, dtype=F64), H, R * torch.eye(M, dtype=F64), obs.y)
    return den, obs, m, mu_post, cov_post


def correction(guided, den, x_t, t, x) -> torch.Tensor:
    """``sigma^2 / alpha * grad log p(y | x_t)``: the guided mean minus the prior mean."""
    return guided(x_t, t, x) - den(x_t, t, x)


# ---------------------------------------------------------------------------------------- MMPS, exact

@pytest.mark.parametrize("full_prior", [False, True], ids=["diagonal-prior", "full-prior"])
def test_mmps_is_the_exact_posterior_denoiser(full_prior):
    schedule = VPLinear()
    g = torch.Generator().manual_seed(0)
    if full_prior:  # a correlated prior: J = dx_hat/dx_t is not diagonal
        L = torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D)
        Sigma = 0.05 * torch.eye(D, dtype=F64) + 0.1 * L @ L.T
    else:
        Sigma = Q * torch.eye(D, dtype=F64)
    prior = FullGaussianDenoiser(schedule, Sigma, mean=DYN)
    obs = observation(DYN(X_PREV[None])[0])
    K = torch.linalg.solve(H @ Sigma @ H.T + R * torch.eye(M, dtype=F64), H @ Sigma).T
    _, Sigma_post = gaussian_posterior(torch.zeros(D, dtype=F64), Sigma, H, R * torch.eye(M, dtype=F64), obs.y)
    posterior = FullGaussianDenoiser(schedule, Sigma_post, mean=lambda c: DYN(c) + (obs.y - DYN(c) @ H.T) @ K.T)
    guided = MMPS(prior, obs, cg_iterations=M)
    x = X_PREV + 0.5 * torch.randn(5, D, generator=g, dtype=F64)
    for t in (1e-3, 0.1, 0.5, 0.9, 1.0):
        t = torch.tensor(t, dtype=F64)
        alpha, sigma = schedule(t)
        x_t = alpha * DYN(x) + torch.randn(5, D, generator=g, dtype=F64)
        assert torch.allclose(guided(x_t, t, x), posterior(x_t, t, x), rtol=0, atol=1e-9), float(t)
    t = torch.tensor([1e-3, 0.2, 0.5, 0.8, 1.0], dtype=F64)  # per-particle times
    x_t = torch.randn(5, D, generator=g, dtype=F64)
    assert torch.allclose(guided(x_t, t, x), posterior(x_t, t, x), rtol=0, atol=1e-9)


def test_conjugate_gradient_solves_spd_systems_in_m_iterations():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 10, 10, generator=g, dtype=F64)
    A = A @ A.transpose(-1, -2) + 0.5 * torch.eye(10, dtype=F64)  # condition number ~ 1e2
    b = torch.randn(3, 10, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: torch.einsum("bij,bj->bi", A, v), b, iterations=10)
    assert torch.allclose(x, torch.linalg.solve(A, b), rtol=0, atol=1e-8)
    # rows are independent: solving one row alone gives the same answer
    x0 = conjugate_gradient(lambda v: torch.einsum("ij,bj->bi", A[0], v), b[:1], iterations=10)
    assert torch.allclose(x0, x[:1], rtol=0, atol=1e-12)
    # a zero right-hand side stays exactly zero (no 0/0)
    assert torch.equal(conjugate_gradient(lambda v: 2 * v, torch.zeros(2, 4, dtype=F64), 5), torch.zeros(2, 4, dtype=F64))


def test_conjugate_gradient_stops_on_negative_curvature():
    """An indefinite system (a learned Jacobian at t ~ 1): rows freeze at their last iterate, finite."""
    g = torch.Generator().manual_seed(2)
    A = torch.diag(torch.tensor([1.0, 2.0, -3.0, 0.5], dtype=F64))
    b = torch.stack([torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=F64), torch.randn(4, generator=g, dtype=F64)])
    x = conjugate_gradient(lambda v: v @ A, b, iterations=8)
    assert torch.all(torch.isfinite(x))
    assert torch.allclose(x[0], torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=F64), atol=1e-12)  # A PD on b's span


class NonSymmetricDenoiser:
    """``x_hat = x_t W^T`` with a random ``W``: its Jacobian is no covariance (an untrained network)."""

    def __init__(self, W):
        self.schedule, self.W = VPCosine(), W

    def __call__(self, x_t, t, condition):
        return x_t @ self.W.T


def test_mmps_stays_finite_when_the_jacobian_is_not_a_covariance():
    g = torch.Generator().manual_seed(9)
    den = NonSymmetricDenoiser(torch.randn(D, D, generator=g, dtype=F64))
    obs = observation(torch.zeros(D, dtype=F64))
    guided = MMPS(den, obs, cg_iterations=M)
    x_t = torch.randn(64, D, generator=g, dtype=F64)
    for t in (1.0, 0.99, 0.9):
        assert torch.all(torch.isfinite(guided(x_t, torch.tensor(t, dtype=F64), x_t)))


# ---------------------------------------------------------------------------------------- MMPS, sampling

@pytest.mark.parametrize("eta,corrections", [(0.0, 0), (1.0, 0), (1.0, 1)])
def test_mmps_sampling_reproduces_the_optimal_proposal(eta, corrections):
    schedule, steps = VPCosine(), 32
    den, obs, m, mu_post, cov_post = twin(schedule)
    guided = make_guidance("mmps", den, obs, cg_iterations=M)
    with torch.no_grad():
        out = Sampler(guided, steps, eta, corrections).sample(X_PREV.expand(N, D), normal_draws(N, D, seed=3), (D,))
    law_mean, law_cov = sampler_law(schedule, steps, eta, mu_post, cov_post, corrections)
    check_moments(out, law_mean, law_cov)  # MC: 5 SE on all means and covariance entries
    # discretisation: the mean is exact to 1e-4 SD, the variance low at first order (|bias| < 16 / steps)
    var_post = torch.diagonal(cov_post)
    assert torch.all((law_mean - mu_post).abs() < 1e-4 * var_post.sqrt())
    rel = torch.diagonal(law_cov) / var_post - 1
    assert torch.all(rel <= 0) and torch.all(rel > -16 / steps), rel
    # hence the samples against the optimal proposal itself: 5 SE plus the exact bias
    assert torch.all((out.mean(0) - mu_post).abs() <= 5 * (var_post / N).sqrt() + (law_mean - mu_post).abs())
    assert torch.all((out.var(0) - var_post).abs() <= 5 * var_post * math.sqrt(2 / (N - 1)) + rel.abs() * var_post)
    # and the observed components did move: the posterior mean is many SE away from the prior mean
    assert torch.all((mu_post - m)[::STRIDE].abs() > 40 * (var_post[::STRIDE] / N).sqrt())


def test_mmps_sampling_with_a_correlated_prior():
    """Unobserved components move through prior correlations; cross-covariances must match too."""
    schedule, steps, n = VPLinear(), 32, 20000
    g = torch.Generator().manual_seed(4)
    L = torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D)
    Sigma = 0.05 * torch.eye(D, dtype=F64) + 0.1 * L @ L.T
    prior = FullGaussianDenoiser(schedule, Sigma, mean=DYN)
    m = DYN(X_PREV[None])[0]
    obs = observation(m)
    mu_post, cov_post = gaussian_posterior(m, Sigma, H, R * torch.eye(M, dtype=F64), obs.y)
    out = Sampler(MMPS(prior, obs, cg_iterations=M), steps, 1.0).sample(X_PREV.expand(n, D), normal_draws(n, D, 5), (D,))
    check_moments(out, *sampler_law(schedule, steps, 1.0, mu_post, cov_post))


def test_mmps_sampling_does_not_depend_on_micro_batching():
    den, obs, *_ = twin()
    guided = make_guidance("mmps", den, obs, cg_iterations=4)
    sampler, n = Sampler(guided, steps=8, eta=1.0), 6
    x_prev = X_PREV + torch.arange(n, dtype=F64)[:, None]

    def run(batches):
        noise = ParticleNoise(0, 1, list(range(n)), "propagate")
        return torch.cat([sampler.sample(x_prev[r], lambda r=r: noise.normal(r, (D,)), (D,)) for r in batches])

    assert torch.allclose(run([list(range(n))]), run([[0, 1], [2, 3, 4, 5]]), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------- DPS, SDA

def test_dps_sda_mmps_differ_only_by_their_observation_variance():
    """Diagonal prior, selection H: correction_method = correction_DPS * r / cov_y(method), exactly."""
    schedule, gamma = VPCosine(), 0.3
    den, obs, *_ = twin(schedule)
    g = torch.Generator().manual_seed(6)
    x = X_PREV + torch.randn(4, D, generator=g, dtype=F64)
    for t in (1e-3, 0.05, 0.3, 0.7, 1.0):
        t = torch.tensor(t, dtype=F64)
        alpha, sigma = schedule(t)
        x_t = alpha * DYN(x) + torch.randn(4, D, generator=g, dtype=F64)
        dps = correction(DPS(den, obs), den, x_t, t, x)
        sda = correction(SDA(den, obs, gamma=gamma), den, x_t, t, x)
        mmps = correction(MMPS(den, obs, cg_iterations=M), den, x_t, t, x)
        V = Q * sigma**2 / (alpha**2 * Q + sigma**2)
        scale = float(dps.abs().max())
        assert torch.allclose(sda, dps * R / (R + gamma * sigma**2 / alpha**2), rtol=0, atol=1e-10 * scale)
        assert torch.allclose(mmps, dps * R / (R + V), rtol=0, atol=1e-10 * scale)
        assert torch.all(dps[:, 1::2] == 0) and torch.all(mmps[:, 1::2].abs() < 1e-15)  # unobserved, uncorrelated
        if t < 0.01:  # sigma_t -> 0: relative differences O(sigma^2 (gamma + q) / r) < 1e-3 here
            assert torch.allclose(dps, mmps, rtol=1e-3, atol=0) and torch.allclose(sda, mmps, rtol=1e-3, atol=0)


def test_dps_scale_multiplies_the_likelihood_score():
    den, obs, *_ = twin()
    x, x_t, t = X_PREV.expand(3, D), torch.randn(3, D, dtype=F64), torch.tensor(0.4, dtype=F64)
    one = correction(DPS(den, obs), den, x_t, t, x)
    assert torch.allclose(correction(DPS(den, obs, scale=2.5), den, x_t, t, x), 2.5 * one, rtol=1e-13, atol=0)


@pytest.mark.parametrize("method,options", [("dps", {}), ("sda", {"gamma": 0.1})])
def test_dps_and_sda_move_the_mean_toward_the_posterior(method, options):
    n, steps = 4000, 32
    den, obs, m, mu_post, cov_post = twin()
    guided = make_guidance(method, den, obs, **options)
    out = Sampler(guided, steps, eta=1.0).sample(X_PREV.expand(n, D), normal_draws(n, D, 7), (D,))
    mean = out.mean(0)
    # approximations: on observed components the error shrinks to under half the prior's error
    # (measured: both overshoot, DPS by ~17 %, SDA by ~6 % of it; the prior mean is > 40 SE off)
    assert torch.all((mean - mu_post)[::STRIDE].abs() < 0.5 * (m - mu_post)[::STRIDE].abs()), (mean - mu_post)
    # unobserved components are independent of y under this prior: they stay at m (5 SE)
    assert torch.all((mean - m)[1::STRIDE].abs() < 5 * math.sqrt(Q / n))


# ---------------------------------------------------------------------------------------- nonlinear H

def kde_problem(fn: str):
    g = torch.Generator().manual_seed(8)
    x_prev = torch.randn(64, 4, generator=g, dtype=F64)
    x_next = torch.tanh(x_prev.roll(1, -1)) + 0.3 * torch.randn(64, 4, generator=g, dtype=F64)
    den = KDEDenoiser(VPCosine(), x_prev, x_next)
    y_field = torch.tensor([0.4, -0.3, float("nan"), 0.9], dtype=F64)
    obs = Observation.from_field(y_field, torch.tensor([0.05, 0.1, 1.0, 0.02], dtype=F64), fn)
    cond = torch.randn(3, 4, generator=g, dtype=F64)
    x_t = torch.randn(3, 4, generator=g, dtype=F64)
    return den, obs, cond, x_t


def jacobians(den, x_t, t, cond) -> torch.Tensor:
    """``dx_hat/dx_t`` per particle by brute force: ``[B, D, D]``."""
    return torch.stack([torch.autograd.functional.jacobian(lambda z: den(z[None], t, cond[b:b + 1])[0], x_t[b])
                        for b in range(len(x_t))])


def finite_difference_grad(log_lik, x_t: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    grad = torch.zeros_like(x_t)
    for b in range(x_t.shape[0]):
        for i in range(x_t.shape[1]):
            e = torch.zeros_like(x_t)
            e[b, i] = h
            grad[b, i] = (log_lik(x_t + e)[b] - log_lik(x_t - e)[b]) / (2 * h)
    return grad


@pytest.mark.parametrize("fn", ["arctan", "square"])
@pytest.mark.parametrize("method", ["dps", "sda", "mmps"])
def test_likelihood_gradient_matches_finite_differences(method, fn):
    den, obs, cond, x_t = kde_problem(fn)
    op = obs.operator
    options = {"dps": {"scale": 1.0}, "sda": {"gamma": 0.2}, "mmps": {"cg_iterations": obs.size}}[method]
    guided = make_guidance(method, den, obs, **options)
    for t in (0.3, 0.7):
        t = torch.tensor(t, dtype=F64)
        alpha, sigma = den.schedule(t)
        x_hat0 = den(x_t, t, cond)
        A0 = op.derivative(x_hat0)  # [B, M]
        if method == "dps":
            cov_y = torch.diag_embed(obs.variance.expand(3, -1))
        elif method == "sda":
            cov_y = torch.diag_embed(obs.variance + options["gamma"] * sigma**2 / alpha**2 * A0**2)
        else:  # Sigma_y + A V A^T, V = sigma^2/alpha J, frozen at x_t
            J = jacobians(den, x_t, t, cond)[:, op.index][:, :, op.index]
            cov_y = torch.diag_embed(obs.variance.expand(3, -1)) + sigma**2 / alpha * A0[:, :, None] * J * A0[:, None, :]

        def log_lik(z, cov_y=cov_y, t=t):
            r = obs.y - op(den(z, t, cond))
            return -0.5 * torch.einsum("bi,bi->b", r, torch.linalg.solve(cov_y, r))

        with torch.no_grad():
            grad = (guided(x_t, t, cond) - x_hat0) * alpha / sigma**2
        expected = finite_difference_grad(log_lik, x_t)
        assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max())), (grad, expected)


def test_sigma_to_zero_agreement_with_nonlinear_h():
    """O(sigma^2) differences between methods: they shrink ~100x from t = 0.03 to t = 3e-3."""
    den, obs, cond, x_t = kde_problem("arctan")
    diffs = []
    for t in (0.03, 3e-3):
        t = torch.tensor(t, dtype=F64)
        alpha, _ = den.schedule(t)
        x = alpha * x_t
        ref = correction(MMPS(den, obs, cg_iterations=obs.size), den, x, t, cond)
        rel = [float((correction(g, den, x, t, cond) - ref).norm() / ref.norm())
               for g in (DPS(den, obs), SDA(den, obs, gamma=0.1))]
        diffs.append(rel)
    for before, after in zip(*diffs):
        assert after < before / 20 and after < 1e-2, diffs


# ---------------------------------------------------------------------------------------- plumbing

def test_no_grad_contexts_and_no_graph_leaks():
    den, obs, *_ = twin()
    x, t = X_PREV.expand(3, D), torch.tensor(0.5, dtype=F64)
    for method in ("dps", "sda", "mmps"):
        guided = make_guidance(method, den, obs)
        with torch.no_grad():
            a = guided(torch.randn(3, D, dtype=F64), t, x)
        assert not a.requires_grad
        x_t = torch.randn(3, D, dtype=F64, requires_grad=True)
        b = guided(x_t, t, x)
        assert not b.requires_grad and b.grad_fn is None and x_t.grad is None
        with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
            guided(torch.randn(3, D, dtype=F64), t, x)


def test_float32_states_keep_their_dtype():
    den, obs, *_ = twin()
    x32, t = X_PREV.expand(3, D).float(), torch.tensor(0.5)
    x_t = torch.randn(3, D, dtype=F64)
    for method in ("dps", "sda", "mmps"):
        guided = make_guidance(method, den, obs)
        out32 = guided(x_t.float(), t, x32)
        out64 = guided(x_t, t.double(), x32.double())
        assert out32.dtype == torch.float32
        assert torch.allclose(out32.double(), out64, rtol=0, atol=1e-5), method


def test_make_guidance_rejects_unknown_methods_and_options():
    den, obs, *_ = twin()
    with pytest.raises(ValueError, match="unknown guidance"):
        make_guidance("pigdm", den, obs)
    with pytest.raises(ValueError, match="gamma"):
        make_guidance("mmps", den, obs, gamma=0.1)
    assert isinstance(make_guidance("sda", den, obs, gamma=0.1), SDA)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mmps_on_cuda_matches_cpu():
    den, obs, *_ = twin()  # the observation stays on the CPU: the wrapper moves it once
    guided = make_guidance("mmps", den, obs, cg_iterations=M)
    x_t, t = torch.randn(16, D, dtype=F64), torch.tensor(0.5, dtype=F64)
    ref = guided(x_t, t, X_PREV.expand(16, D))
    out = guided(x_t.cuda().float(), t.cuda().float(), X_PREV.expand(16, D).cuda().float())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert torch.allclose(out.cpu().double(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fn", ["identity", "arctan"])
def test_mmps_diagonal_covariance_equals_the_jacobian_form_for_an_isotropic_gaussian_prior(fn):
    """``covariance="diagonal"`` uses the denoiser's ``variance``; for ``Q = q I`` that is Tweedie's
    covariance exactly, so with CG run to ``M`` iterations both forms give the same guided
    denoiser (float64; the CG solve of an M = 6 system is exact to ~1e-12 relative)."""
    g = torch.Generator().manual_seed(5)
    schedule = VPCosine()
    den = GaussianDenoiser(schedule, DYN, Q)
    x = torch.randn(4, D, generator=g, dtype=F64)
    y = torch.randn(D, generator=g, dtype=F64)
    y[1::STRIDE] = float("nan")
    obs = Observation.from_field(y, R, fn)
    x_t = torch.randn(4, D, generator=g, dtype=F64)
    for t in (0.9, 0.5, 0.1):
        tt = torch.tensor(t, dtype=F64)
        jac = MMPS(den, obs, cg_iterations=obs.size)(x_t, tt, x)
        diag = MMPS(den, obs, cg_iterations=obs.size, covariance="diagonal")(x_t, tt, x)
        if fn == "identity":
            torch.testing.assert_close(diag, jac, rtol=1e-10, atol=1e-10)
        else:  # nonlinear H: both linearise at x_hat, so they agree too
            torch.testing.assert_close(diag, jac, rtol=1e-8, atol=1e-8)


def test_mmps_diagonal_needs_a_variance_model():
    den = KDEDenoiser(VPCosine(), torch.zeros(4, 2, dtype=F64), torch.zeros(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="guidance.covariance=diagonal"):
        MMPS(den, Observation.from_field(torch.zeros(2, dtype=F64), R), covariance="diagonal")
