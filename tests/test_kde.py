"""The closed-form KDE denoiser equals a brute-force Gaussian-mixture computation.

Brute force: p(x'_t | x) = sum_j w_j(x) N(x'_t; alpha x'_j, diag(alpha^2 h^2 + sigma^2)); Tweedie,
E[x' | x'_t] = (x'_t + sigma^2 grad log p(x'_t | x)) / alpha, with the gradient by autograd of the
explicit mixture log-density. Both are float64 evaluations of the same expression: 1e-10.
"""

import torch

from pipeline.diffusion.schedules import VPCosine, VPLinear
from pipeline.models.kde import KDEDenoiser


def brute_force(den: KDEDenoiser, x_t, t, cond):
    alpha, sigma = den.schedule(torch.as_tensor(t, dtype=torch.float64))
    out = []
    for b in range(x_t.shape[0]):
        x = x_t[b].clone().requires_grad_(True)
        comps = []
        for j in range(den.x_prev.shape[0]):
            logw = torch.distributions.Normal(den.x_prev[j], den.h_cond).log_prob(cond[b]).sum()
            var = alpha**2 * den.h**2 + sigma**2
            comps.append(logw + torch.distributions.Normal(alpha * den.x_next[j], var.sqrt()).log_prob(x).sum())
        logp = torch.logsumexp(torch.stack(comps), 0)
        (g,) = torch.autograd.grad(logp, x)
        out.append((x.detach() + sigma**2 * g) / alpha)
    return torch.stack(out)


def test_kde_matches_mixture():
    g = torch.Generator().manual_seed(0)
    xp = torch.randn(40, 3, generator=g, dtype=torch.float64)
    xn = 0.8 * xp + 0.3 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    for schedule in (VPCosine(), VPLinear()):
        den = KDEDenoiser(schedule, xp, xn)
        x_t = torch.randn(5, 3, generator=g, dtype=torch.float64)
        cond = torch.randn(5, 3, generator=g, dtype=torch.float64)
        for t in (0.05, 0.5, 0.9):
            got = den(x_t, torch.tensor(t, dtype=torch.float64), cond)
            want = brute_force(den, x_t, t, cond)
            assert torch.allclose(got, want, atol=1e-10, rtol=1e-10)


def test_kde_condition_selects_pairs():
    # with a narrow bandwidth the condition picks its own pair: x near x_2 -> d near x'_2 (t small)
    xp = torch.tensor([[0.0], [5.0]], dtype=torch.float64)
    xn = torch.tensor([[1.0], [-3.0]], dtype=torch.float64)
    den = KDEDenoiser(VPLinear(), xp, xn, bandwidth=0.01)
    out = den(torch.tensor([[0.0]], dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64),
              torch.tensor([[5.0]], dtype=torch.float64))
    # at t = 1 (VPLinear alpha ~ 0.0067) x_t carries almost no information: d ~ x'_2 = -3
    assert abs(float(out) + 3.0) < 1e-3
