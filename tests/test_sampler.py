"""The eta-sampler against the exact law of its own discretisation, and that law against the target.

With the exact denoiser of a Gaussian target N(mu, Sigma) every sampler step is affine plus
independent Gaussian noise, so the output law of the *discretised* sampler is Gaussian with
moments computed exactly by ``gaussian_oracle.sampler_law``. Two kinds of checks:

(a) Monte Carlo: samples against those exact discretised moments, every mean, variance and
    covariance entry within 5 standard errors (SE of a mean sqrt(P_ii / n), of a covariance entry
    sqrt((P_ii P_jj + P_ij^2) / (n - 1))). With ~100 statistics per test, a false alarm has
    probability ~1e-4 (and the seeds are fixed).
(b) Discretisation: the exact discretised moments against the target N(mu, Sigma). The mean is exact
    up to the t = 1 start (|bias| < 1e-4 sqrt(q) for |mu| <= 8, measured <= 1.5e-5); the variance
    is too small at first order, -c / steps with c <= 16 over the four schedules and eta in {0, 1}
    (measured worst 15.2, VP-linear, eta = 1, q = 0.1), and quartering the step shrinks the bias by
    a factor 2.5..4.5 (first order: 4).
The claim "the sampler reproduces N(m, q I)" is then: |sample - target| <= 5 SE + |bias|, tested too.
"""

import math

import pytest
import torch

from gaussian_oracle import check_moments, normal_draws, sampler_law
from pipeline.diffusion.sampler import Sampler, time_grid
from pipeline.diffusion.schedules import EDM, VE, VPCosine, VPLinear
from pipeline.models.dynamics import Linear
from pipeline.models.gaussian import GaussianDenoiser
from pipeline.rng import ParticleNoise

D, Q, N = 8, 0.1, 20000
SCHEDULES = {"vp-cosine": VPCosine(), "vp-linear": VPLinear(), "ve": VE(), "edm": EDM()}
X_PREV = torch.linspace(-8, 8, D, dtype=torch.float64)  # conditions give means up to |m| ~ 8


def twin(schedule) -> tuple[GaussianDenoiser, torch.Tensor]:
    den = GaussianDenoiser(schedule, Linear(0.95, 0.25), Q)
    return den, den.mean(X_PREV[None])[0]


# ---------------------------------------------------------------------------------------- time grid

@pytest.mark.parametrize("grid", ["uniform", "log-snr"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_time_grid(grid, name):
    schedule = SCHEDULES[name]
    ts = time_grid(schedule, 32, 1e-3, grid)
    assert ts.shape == (33,) and ts.dtype == torch.float64
    assert ts[0] == 1.0 and ts[-1] == 1e-3 and torch.all(ts.diff() < 0)
    if grid == "log-snr":
        alpha, sigma = schedule(ts)
        steps = torch.log(alpha / sigma).diff()
        # inversion by float64 bisection (bracket 2^-64): equal steps in lambda to rounding
        assert torch.allclose(steps, steps[-1].expand(32), rtol=1e-9)
    else:
        assert torch.allclose(ts.diff(), torch.full((32,), -(1 - 1e-3) / 32, dtype=torch.float64), atol=1e-15)


def test_bad_arguments_raise():
    den, _ = twin(VPCosine())
    for kwargs in ({"steps": 0}, {"eta": -0.1}, {"eta": 1.5}, {"corrections": -1}, {"delta": 0.0},
                   {"t_min": 0.0}, {"t_min": 1.0}, {"grid": "cosine"}):
        with pytest.raises(ValueError):
            Sampler(den, **{"steps": 8, **kwargs})
    with pytest.raises(ValueError, match="draw"):
        Sampler(den, steps=4).sample(torch.zeros(3, D, dtype=torch.float64), lambda: torch.zeros(3, D + 1), (D,))


# ---------------------------------------------------------------------------------------- randomness

def test_all_noise_comes_from_draw(monkeypatch):
    """No global RNG use; ``1 + steps [eta > 0] + steps C`` draws, in a fixed order."""
    den, _ = twin(VPCosine())
    steps, corrections = 5, 2
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(4, D, generator=g, dtype=torch.float64) for _ in range(1 + steps + steps * corrections)]
    calls = []

    def draw():
        calls.append(1)
        return pool[len(calls) - 1]

    state = torch.get_rng_state()
    for name in ("randn", "randn_like", "rand", "rand_like", "normal", "randint"):
        monkeypatch.setattr(torch, name, lambda *a, **k: pytest.fail("the sampler used the global RNG"))
    out = Sampler(den, steps=steps, eta=1.0, corrections=corrections).sample(X_PREV.expand(4, D), draw, (D,))
    monkeypatch.undo()
    assert len(calls) == len(pool) and torch.equal(torch.get_rng_state(), state)
    calls.clear()
    again = Sampler(den, steps=steps, eta=1.0, corrections=corrections).sample(X_PREV.expand(4, D), draw, (D,))
    assert torch.equal(out, again)  # same draws, same result
    calls.clear()
    Sampler(den, steps=steps, eta=0.0).sample(X_PREV.expand(4, D), draw, (D,))
    assert len(calls) == 1  # ODE: only the start draw


def test_result_does_not_depend_on_micro_batching():
    """Per-particle streams (:mod:`pipeline.rng`): one batch of 8 or batches of 3, 5 give the same particles."""
    den, _ = twin(VPLinear())
    n = 8
    x_prev = X_PREV + torch.arange(n, dtype=torch.float64)[:, None]
    sampler = Sampler(den, steps=16, eta=1.0, corrections=1)

    def run(batches):
        noise = ParticleNoise(7, 3, list(range(n)), "propagate")
        parts = [sampler.sample(x_prev[rows], lambda rows=rows: noise.normal(rows, (D,)), (D,)) for rows in batches]
        return torch.cat(parts)

    whole = run([list(range(n))])
    split = run([[0, 1, 2], [3, 4, 5, 6, 7]])
    assert torch.allclose(whole, split, rtol=0, atol=1e-13)  # elementwise denoiser: equal to rounding


def test_dtype_and_device_follow_the_draws():
    den, _ = twin(VPCosine())
    out = Sampler(den, steps=4, eta=1.0).sample(torch.zeros(3, D), lambda: torch.randn(3, D), (D,))
    assert out.dtype == torch.float32 and out.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    den, _ = twin(VPCosine())
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(64, D, generator=g, dtype=torch.float64) for _ in range(1 + 16)]
    sampler = Sampler(den, steps=16, eta=1.0)

    def run(device, dtype):
        it = iter(pool)
        return sampler.sample(X_PREV.expand(64, D).to(device, dtype), lambda: next(it).to(device, dtype), (D,))

    ref, out = run("cpu", torch.float64), run("cuda", torch.float32)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert torch.allclose(out.cpu().double(), ref, atol=1e-4 * float(ref.abs().max()))


# ---------------------------------------------------------------------------------------- exact law

@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("name", SCHEDULES)
def test_reproduces_target_up_to_monte_carlo_and_discretisation(eta, name):
    schedule = SCHEDULES[name]
    den, m = twin(schedule)
    cov = Q * torch.eye(D, dtype=torch.float64)
    steps = 32
    out = Sampler(den, steps=steps, eta=eta).sample(X_PREV.expand(N, D), normal_draws(N, D, seed=0), (D,))
    law_mean, law_cov = sampler_law(schedule, steps, eta, m, cov)
    check_moments(out, law_mean, law_cov)  # (a)
    # the same samples against the target: 5 SE plus the exact discretisation bias
    mean_bias, var_bias = (law_mean - m).abs(), (torch.diagonal(law_cov) - Q).abs()
    assert torch.all((out.mean(0) - m).abs() <= 5 * math.sqrt(Q / N) + mean_bias)
    assert torch.all((out.var(0) - Q).abs() <= 5 * Q * math.sqrt(2 / (N - 1)) + var_bias)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("name", SCHEDULES)
def test_discretisation_bias_is_first_order(eta, name):
    schedule = SCHEDULES[name]
    _, m = twin(schedule)
    for q in (0.1, 1.0):
        cov = q * torch.eye(D, dtype=torch.float64)
        bias = {}
        for steps in (64, 256):
            law_mean, law_cov = sampler_law(schedule, steps, eta, m, cov)
            assert torch.all((law_mean - m).abs() < 1e-4 * math.sqrt(q)), (steps, law_mean - m)
            assert torch.allclose(law_cov, torch.diag(torch.diagonal(law_cov)), atol=1e-12)  # no spurious correlation
            bias[steps] = torch.diagonal(law_cov) / q - 1
        assert torch.all(bias[64] < 0) and torch.all(bias[64] > -16 / 64), bias[64]
        ratio = bias[64] / bias[256]
        assert torch.all((ratio > 2.5) & (ratio < 4.5)), ratio


def test_langevin_corrections_match_their_law_and_reduce_bias():
    schedule = VPCosine()
    den, m = twin(schedule)
    cov = Q * torch.eye(D, dtype=torch.float64)
    out = Sampler(den, steps=32, eta=1.0, corrections=2, delta=0.1).sample(X_PREV.expand(N, D), normal_draws(N, D, 1), (D,))
    law_mean, law_cov = sampler_law(schedule, 32, 1.0, m, cov, corrections=2, delta=0.1)
    check_moments(out, law_mean, law_cov)
    _, plain = sampler_law(schedule, 32, 1.0, m, cov)
    assert torch.all((torch.diagonal(law_cov) - Q).abs() < (torch.diagonal(plain) - Q).abs())


def test_log_snr_grid_matches_its_law():
    schedule = VPLinear()
    den, m = twin(schedule)
    cov = Q * torch.eye(D, dtype=torch.float64)
    out = Sampler(den, steps=32, eta=0.0, grid="log-snr").sample(X_PREV.expand(N, D), normal_draws(N, D, 2), (D,))
    check_moments(out, *sampler_law(schedule, 32, 0.0, m, cov, grid="log-snr"))
