"""The particle filter against the Kalman filter on the linear-Gaussian twin.

Linear dynamics, linear H, Gaussian noise: the Kalman filter is the exact posterior. The fully
adapted PF with 'inflated' weights (exact here), the exact Gaussian denoiser and MMPS guidance
(exact for Gaussian priors) is a consistent Monte-Carlo estimate of it, so its mean error is
e_N ~ c / sqrt(N_eff): going from N to 16 N divides it by ~4. We test at N = 100 and 1600,
averaging the squared error over components, 3 cycles and 4 seeds, and require the ratio in
[2.5, 6.5] (4 -/+ the spread of a ratio of two chi-square-like averages over ~100 terms, plus the
small sampler discretisation bias with 64 steps, which would push the ratio below 4).
"""

import math

import torch

from pipeline.data.twins import initial_state, simulate
from pipeline.diffusion.observation import Observation
from pipeline.diffusion.schedules import VPCosine
from pipeline.distributed.comm import LocalComm
from pipeline.filters.ensemble import Ensemble, weighted_moments
from pipeline.filters.kalman import kalman_step
from pipeline.filters.pf_optimal import OptimalProposalPF
from pipeline.filters.resample_step import Resampler
from pipeline.filters.propagate import Propagator
from pipeline.models.dynamics import Linear
from pipeline.models.gaussian import GaussianDenoiser
from pipeline.rng import ParticleNoise

DIM, Q, R, STRIDE, CYCLES = 6, 0.1, 0.25, 2, 3


def run_pf(n: int, seed: int, ys: list[torch.Tensor], x0: torch.Tensor, band=None, alphas=None) -> list[torch.Tensor]:
    den = GaussianDenoiser(VPCosine(), Linear(0.95, 0.25), Q)
    prop = Propagator(den, steps=64, eta=1.0, corrections=0, delta=0.1, t_min=1e-3, grid="uniform",
                      guidance="mmps", guidance_options={"cg_iterations": DIM}, micro_batch=0, seed=seed)
    pf = OptimalProposalPF(LocalComm(), prop, (DIM,), Resampler(LocalComm(), n, 0.5, 0.0, seed), inflate=True, band=band)
    ids = torch.arange(n)
    x = x0 + ParticleNoise(seed, 0, ids.tolist(), "init").normal(list(range(n)), (DIM,))
    ens = Ensemble(ids, x, torch.full((n,), -math.log(n), dtype=torch.float64))
    means = []
    for k, y in enumerate(ys, start=1):
        result = pf.cycle(ens, k, Observation.from_field(y, R))
        ens = result.next
        if alphas is not None:
            alphas.append(result.diagnostics.alpha)
        means.append(weighted_moments(LocalComm(), ens.x, ens.log_w)[0])
    return means


def kalman_means(ys, x0):
    M = Linear(0.95, 0.25).matrix(DIM)
    H = torch.eye(DIM, dtype=torch.float64)[::STRIDE]
    mu, P, out = x0.clone(), torch.eye(DIM, dtype=torch.float64), []
    for y in ys:
        _, _, mu, P = kalman_step(mu, P, M, Q * torch.eye(DIM, dtype=torch.float64), H,
                                  R * torch.eye(len(H), dtype=torch.float64), y[::STRIDE])
        out.append(mu)
    return out


def test_pf_mean_converges_to_kalman_at_monte_carlo_rate():
    g = torch.Generator().manual_seed(7)
    params = dict(dim=DIM, a=0.95, c=0.25, q=Q)
    x0 = initial_state("linear", params, g)[0]
    truth = simulate("linear", params, CYCLES, g, x0)
    ys = []
    for k in range(1, CYCLES + 1):
        y = truth[k] + R**0.5 * torch.randn(DIM, generator=g, dtype=torch.float64)
        y[1::STRIDE] = float("nan")
        ys.append(y)
    kf = kalman_means(ys, x0)
    err = {}
    for n in (100, 1600):
        sq = [((m - mu) ** 2).mean() for seed in range(4) for m, mu in zip(run_pf(n, seed, ys, x0), kf)]
        err[n] = float(torch.stack(sq).mean().sqrt())
    ratio = err[100] / err[1600]
    assert 2.5 < ratio < 6.5, (err, ratio)
    # and the large-N error is at the Monte-Carlo level: posterior variance <= Q + a^2 ~ 1, so
    # e_1600 <~ sqrt(1 / 1600 * (N / N_eff <= 2)) = 0.035
    assert err[1600] < 0.035, err


def test_diagonal_inflation_log_likelihood_equals_the_dense_form():
    """``cov`` given as its diagonal ``[B, M]`` is the same Gaussian as ``diag_embed(cov)`` (1e-12)."""
    from pipeline.diffusion.observation import Observation
    from pipeline.filters.likelihood import gaussian_log_likelihood

    g = torch.Generator().manual_seed(3)
    obs = Observation.from_field(torch.randn(7, generator=g, dtype=torch.float64), 0.3)
    hx = torch.randn(5, 7, generator=g, dtype=torch.float64)
    v = torch.rand(5, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gaussian_log_likelihood(obs, hx, v),
                               gaussian_log_likelihood(obs, hx, torch.diag_embed(v)), rtol=1e-12, atol=1e-12)


def test_tempering_is_inactive_on_the_oracle_and_changes_nothing():
    """With the ESS already above the band (3 observations, N = 100), adaptive tempering keeps
    alpha = 1 in every cycle and the filter is bit for bit the untempered one."""
    g = torch.Generator().manual_seed(11)
    params = dict(dim=DIM, a=0.95, c=0.25, q=Q)
    x0 = initial_state("linear", params, g)[0]
    truth = simulate("linear", params, CYCLES, g, x0)
    ys = []
    for k in range(1, CYCLES + 1):
        y = truth[k] + R**0.5 * torch.randn(DIM, generator=g, dtype=torch.float64)
        y[1::STRIDE] = float("nan")
        ys.append(y)
    alphas: list[float] = []
    tempered = run_pf(100, 0, ys, x0, band=(0.2, 0.25), alphas=alphas)
    plain = run_pf(100, 0, ys, x0)
    assert alphas == [1.0] * CYCLES
    for a, b in zip(tempered, plain):
        assert torch.equal(a, b)
