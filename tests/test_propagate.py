"""Exact one-draw propagation of a Gaussian transition against its law; one denoiser call."""

import math

import torch

from pipeline.diffusion.schedules import VPCosine
from pipeline.filters.propagate import Propagator
from pipeline.models.dynamics import Lorenz63
from pipeline.models.gaussian import GaussianDenoiser

N, Q = 20_000, torch.tensor([0.5, 0.1, 2.0], dtype=torch.float64)


def propagator(exact: bool, steps: int = 64) -> Propagator:
    den = GaussianDenoiser(VPCosine(), Lorenz63(steps=10), Q)
    return Propagator(den, steps=steps, eta=1.0, corrections=0, delta=0.1, t_min=1e-3, grid="uniform",
                      guidance="dps", guidance_options={}, micro_batch=5000, seed=4, exact=exact)


def test_one_draw_matches_the_gaussian_transition():
    """x' ~ N(m(x), diag(Q)) from one condition, N = 20,000 draws: the sample mean has SE sqrt(q/N), a
    sample variance sqrt(2/N) q, a sample covariance sqrt(q_i q_j / N); 5 SE each."""
    x = torch.tensor([1.0, 2.0, 20.0], dtype=torch.float64).expand(N, 3)
    p = propagator(True)
    out = p.propagate(x, torch.arange(N), 1, (3,), None)
    assert p.timer.calls == N // 5000  # one call per micro-batch, not a reverse diffusion
    m = Lorenz63(steps=10)(x[:1])[0]
    assert (out.mean(0) - m).abs().le(5 * torch.sqrt(Q / N)).all()
    cov = torch.cov(out.T)
    assert (cov.diagonal() / Q - 1).abs().le(5 * math.sqrt(2 / N)).all()
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().le(5 * torch.sqrt(Q[:, None] * Q[None] / N)).all()
    # a particle's draw depends only on its id: the first 100 alone give the same states
    torch.testing.assert_close(p.propagate(x[:100], torch.arange(100), 1, (3,), None), out[:100], rtol=0, atol=0)


def test_exact_flag_off_runs_the_diffusion():
    p = propagator(False, steps=4)
    p.propagate(torch.zeros(10, 3, dtype=torch.float64), torch.arange(10), 1, (3,), None)
    assert p.timer.calls == 4 + 2  # steps + 2 denoiser calls (sampler docstring)
