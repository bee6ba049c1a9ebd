"""Smoother oracle on the linear twin: the exact window denoiser against the RTS smoother.

With W = 2k+1 = L the composed prior is the exact trajectory prior, so MMPS guidance is the exact
posterior denoiser; S = 256 samples give a Monte-Carlo error of the mean of about
0.06 posterior std per state (ratio of spreads ~1 / sqrt(256)), well under the 0.15 asked.
"""

import torch

from pipeline.diffusion.schedules import make_schedule
from pipeline.models.dynamics import Linear
from pipeline.smoothers.gaussian import GaussianWindowDenoiser
from pipeline.smoothers.rts import rts_smoother
from pipeline.smoothers.smoother import SmootherSpec, smooth


def test_full_width_window_matches_rts():
    D, L, S = 4, 15, 256
    M, Q = Linear(0.95, 0.25).matrix(D), 0.1 * torch.eye(D, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    den = GaussianWindowDenoiser(make_schedule("vp-cosine"), M, Q, 7)
    xs = [torch.linalg.cholesky(den.P) @ torch.randn(D, generator=g, dtype=torch.float64)]
    for _ in range(L - 1):
        xs.append(M @ xs[-1] + 0.1**0.5 * torch.randn(D, generator=g, dtype=torch.float64))
    truth = torch.stack(xs)
    y = truth + 0.5 * torch.randn(L, D, generator=g, dtype=torch.float64)
    y[:, 1::2] = float("nan")
    m, C = rts_smoother(y, M, Q, den.P, 0.25)
    std = torch.diagonal(C, dim1=1, dim2=2).sqrt()
    x, _ = smooth(den, y, 0.25, "identity", SmootherSpec(k=7, steps=64, guidance="mmps",
                                                        guidance_options=dict(cg_iterations=8)), 0, range(S))
    err = ((x.mean(0) - m).abs() / std).mean()
    mc = 3 * (x.std(0) / std).mean() / S**0.5  # 3 Monte-Carlo standard errors of the mean, in posterior stds
    assert err < min(0.15, 0.05 + mc)
    rmse_s, rmse_rts = ((x.mean(0) - truth) ** 2).mean().sqrt(), ((m - truth) ** 2).mean().sqrt()
    assert abs(rmse_s / rmse_rts - 1) < 0.10
