"""The KDE window denoiser (closed form against the mixture written out), the KDE smoother and the
bootstrap particle smoother (FFBSi) against the RTS oracle on a small linear twin; the twins bench at toy sizes."""

import math
import re

import pytest
import torch

from pipeline.data.twins import simulate_chains, twin_params
from pipeline.diffusion.schedules import make_schedule
from pipeline.models.dynamics import Linear
from pipeline.smoothers.gaussian import stationary_covariance
from pipeline.smoothers.kde import KDEWindowDenoiser
from pipeline.smoothers.particle import backward_simulation, bootstrap_filter
from pipeline.smoothers.rts import rts_smoother
from pipeline.smoothers.smoother import SmootherSpec, smooth

SCHEDULE = make_schedule("vp-cosine")


def mixture(den: KDEWindowDenoiser, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[x | x_t]`` and the diagonal ``V[x | x_t]`` component by component, sample by sample."""
    means, variances = [], []
    for b in range(x_t.shape[0]):
        alpha, sigma = SCHEDULE(t[b])
        X, h2, x = den.windows, den.h**2, x_t[b].flatten()
        var = alpha**2 * h2 + sigma**2
        logits = torch.stack([-0.5 * ((x - alpha * Xj) ** 2 / var).sum() for Xj in X])
        pi = torch.softmax(logits, 0)
        m = torch.stack([Xj + alpha * h2 / var * (x - alpha * Xj) for Xj in X])
        d = (pi[:, None] * m).sum(0)
        means.append(d)
        variances.append(h2 * sigma**2 / var + (pi[:, None] * m**2).sum(0) - d**2)
    return torch.stack(means).reshape(x_t.shape), torch.stack(variances).reshape(x_t.shape)


def linear_chains(chains: int, steps: int, seed: int) -> torch.Tensor:
    params = twin_params("linear", {"dim": 2, "q": 0.1})
    return simulate_chains("linear", params, chains, steps, torch.Generator().manual_seed(seed))


def test_kde_window_denoiser_is_the_mixture():
    den = KDEWindowDenoiser.from_trajectory(SCHEDULE, linear_chains(3, 9, 0), k=1, bandwidth=0.7)
    assert den.windows.shape == (3 * 8, 3 * 2) and (den.width, den.dim, den.k) == (3, 2, 1)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    mean, var = mixture(den, x_t, t)
    torch.testing.assert_close(den(x_t, t), mean)
    torch.testing.assert_close(den.variance(x_t, t), var)
    torch.testing.assert_close(den(x_t, t[1]), mixture(den, x_t, t[1].expand(4))[0])  # one time for all


def test_local_kde_with_the_whole_ring_as_patch_is_the_kde_of_every_rotation():
    """A patch of all D positions (r = (D-1)/2) centred on p is the window rotated to put p in the middle,
    so the local denoiser at every position is the whole-window KDE over the archive's rotations (exact)."""
    from pipeline.smoothers.kde import LocalKDEWindowDenoiser

    g = torch.Generator().manual_seed(7)
    windows = torch.randn(30, 3, 7, generator=g, dtype=torch.float64)
    local = LocalKDEWindowDenoiser(SCHEDULE, windows, half_width=3, patches=10**6, bandwidth=0.7)
    rotations = KDEWindowDenoiser(SCHEDULE, torch.cat([windows.roll(-s, 2) for s in range(7)]), bandwidth=0.7)
    x_t = torch.randn(4, 3, 7, generator=g, dtype=torch.float64)
    for t in (torch.tensor(0.3, dtype=torch.float64), torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)):
        torch.testing.assert_close(local(x_t, t), rotations(x_t, t))
        torch.testing.assert_close(local.variance(x_t, t), rotations.variance(x_t, t))


def test_local_kde_patch_is_refused_off_the_ring_or_wider_than_it():
    from pipeline.config import ConfigError, load_config
    from pipeline.smoothers.window import window_denoiser

    for preset, dim, patch, key in (("lorenz63", 3, 1, "data.preset=lorenz96"), ("lorenz96", 8, 4, "model.patch < 4")):
        cfg = load_config(overrides=[f"data.preset={preset}", "model=kde", "model.archive=64", f"model.patch={patch}",
                                     "smoother.window_half_width=1"])
        with pytest.raises(ConfigError, match=re.escape(key)):
            window_denoiser(cfg, preset, twin_params(preset, {"dim": dim} if preset == "lorenz96" else {}), dim)


def test_kde_smoother_tracks_the_rts_smoother_on_the_linear_twin():
    """With an archive of 4096 windows the KDE prior is close to the chain's, widened by the kernel
    (``h^2`` added to the prior variance, which biases the mean): the smoothed mean is within 0.7 RTS
    std of the RTS mean on average (measured 0.49) and its RMSE under 0.7 of the prior's (measured 0.41)."""
    D, L, k = 2, 9, 1
    M, Q = Linear(0.95, 0.25).matrix(D), 0.1 * torch.eye(D, dtype=torch.float64)
    truth = linear_chains(1, L - 1, 2)[0]
    g = torch.Generator().manual_seed(3)
    y = truth + 0.5 * torch.randn(L, D, generator=g, dtype=torch.float64)
    P = stationary_covariance(M, Q)
    m, C = rts_smoother(y, M, Q, P, 0.25)
    std = torch.diagonal(C, dim1=1, dim2=2).sqrt()
    den = KDEWindowDenoiser.from_trajectory(SCHEDULE, linear_chains(64, 65, 4), k, bandwidth=0.5)
    x, _ = smooth(den, y, 0.25, "identity", SmootherSpec(k=k, steps=32, guidance="mmps"), 0, range(32))
    error = ((x.mean(0) - m).abs() / std).mean()
    assert error < 0.7, error
    assert ((x.mean(0) - truth) ** 2).mean().sqrt() < 0.7 * torch.diagonal(P).mean().sqrt()


def test_backward_simulation_matches_rts():
    """FFBSi from N = 20000 particles, M = 400 trajectories: mean within 0.25 RTS std on average
    (measured 0.08; Monte-Carlo error of M draws ~ 0.05), spread within 20 % (measured 1.00)."""
    D, L, q = 2, 8, 0.1
    lin = Linear(0.95, 0.25)
    M, Q = lin.matrix(D), q * torch.eye(D, dtype=torch.float64)
    truth = linear_chains(1, L, 5)[0, 1:]
    g = torch.Generator().manual_seed(6)
    y = truth + 0.5 * torch.randn(L, D, generator=g, dtype=torch.float64)
    y[::2, 1] = float("nan")
    P = stationary_covariance(M, Q)
    m, C = rts_smoother(y, M, Q, P, 0.25)
    std = torch.diagonal(C, dim1=1, dim2=2).sqrt()
    x0 = torch.randn(20000, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(P).T
    xs, logw = bootstrap_filter(lin, y, 0.25, "identity", q, x0, g)
    tr = backward_simulation(lin, xs, logw, q, 400, g)
    assert ((tr.mean(0) - m).abs() / std).mean() < 0.25
    assert abs(float((tr.std(0) / std).mean()) - 1) < 0.2


def test_configured_kde_window_denoiser_cuts_the_archive_from_chains():
    from pipeline.config import load_config
    from pipeline.smoothers.window import ARCHIVE_CHAINS, window_denoiser

    cfg = load_config(overrides=["data.preset=lorenz63", "model=kde", "model.archive=200", "model.bandwidth=0.5",
                                 "smoother.window_half_width=1"])
    params = twin_params("lorenz63", {"steps": 5})
    den = window_denoiser(cfg, "lorenz63", params, 3)
    assert (den.width, den.dim) == (3, 3)
    assert 200 <= den.windows.shape[0] < 200 + ARCHIVE_CHAINS
    assert float(den.windows[:, 2::3].mean()) > 10  # on the attractor (z ~ 24), not at the start


def test_kde_log_density_is_the_gaussian_mixture():
    from pipeline.smoothers.kde import kde_log_density

    g = torch.Generator().manual_seed(3)
    X, x, h = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64), \
        0.3 + torch.rand(4, generator=g, dtype=torch.float64)
    comp = torch.distributions.Independent(torch.distributions.Normal(X, h), 1)
    want = torch.logsumexp(comp.log_prob(x[:, None, :]), 1) - math.log(50)
    assert torch.allclose(kde_log_density(x, X, h, batch=3), want, rtol=0, atol=1e-10)


def test_cross_validated_bandwidth_follows_the_law():
    """Likelihood cross-validation picks about Scott's rule (factor 1) for Gaussian data, for which Scott's
    rule is near optimal, and a much smaller factor for a thin ring (noise 0.02 on a unit circle, whose
    per-axis std, 0.7, is what Scott's rule sees)."""
    from pipeline.smoothers.kde import CV_FACTORS, cv_factor

    g = torch.Generator().manual_seed(4)
    gauss = torch.randn(3000, 2, generator=g, dtype=torch.float64)
    assert 0.5 <= cv_factor(gauss[:2000], gauss[2000:]) <= 1.0
    theta = 2 * math.pi * torch.rand(3000, generator=g, dtype=torch.float64)
    ring = torch.stack([theta.cos(), theta.sin()], 1) + 0.02 * torch.randn(3000, 2, generator=g, dtype=torch.float64)
    f = cv_factor(ring[:2000], ring[2000:])
    assert f in CV_FACTORS and f < 0.2


def test_configured_cross_validated_kde_and_its_refusal_in_the_filter(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import InputError
    from pipeline.run import assimilate
    from pipeline.smoothers.kde import CV_FACTORS
    from pipeline.smoothers.window import window_denoiser

    cfg = load_config(overrides=["data.preset=lorenz63", "model=kde", "model.archive=512", "model.bandwidth=cv",
                                 "smoother.window_half_width=1"])
    den = window_denoiser(cfg, "lorenz63", twin_params("lorenz63", {"steps": 5}), 3)
    assert den.factor in CV_FACTORS and den.factor < 1.0  # the attractor is thinner than Scott's Gaussian
    bad = load_config(overrides=["data.preset=lorenz63", "data.params={cycles: 3}", "model=kde",
                                 "model.bandwidth=cv", "filter.particles=4"])
    from pipeline.commands.run import ensure_data

    ensure_data(bad, tmp_path / "data")
    with pytest.raises(InputError, match="model.bandwidth=cv"):
        assimilate(bad, tmp_path / "data", tmp_path / "run", fresh=True)


def test_misfit_of_draws_of_the_chain_is_about_one():
    """The one-step residual of trajectories of the chain itself, in units of its model noise: median about
    the median of ``chi²_D`` over D, ln 2 = 0.693 for D = 2."""
    from pipeline.data.twins import dynamics_for
    from pipeline.smoothers.bench_twins import misfit

    params = twin_params("linear", {"dim": 2, "q": 0.1})
    x = linear_chains(2000, 9, 8)
    assert misfit(x, dynamics_for("linear", params), 0.1) == pytest.approx(0.693, abs=0.03)


def test_mirrored_rmse_aligns_each_trajectory_to_the_truths_lobe():
    """A trajectory and its mirror image (x, y, z) -> (-x, -y, z): their mean sits on the z axis (RMSE the
    rms of x and y over the three components), aligned both are the truth (RMSE 0)."""
    from pipeline.smoothers.bench_twins import mirrored_rmse, window_scores

    truth = torch.tensor([[3.0, 4.0, 20.0], [6.0, 8.0, 25.0]], dtype=torch.float64)
    samples = torch.stack([truth, truth * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)])
    plain, _ = window_scores(samples.mean(0), samples.var(0), truth)
    assert plain == pytest.approx(float((((truth[:, :2]) ** 2).sum(-1) / 3).sqrt().mean()))
    assert mirrored_rmse(samples, truth, (-1.0, -1.0, 1.0)) == pytest.approx(0.0, abs=1e-12)


def test_bench_smoother_twins_runs_every_row(tmp_path):
    """``diffda bench smoother-twins`` at toy sizes on the symmetric case: the window network is trained,
    then loaded by a second run; every method gives its row (with ``blur``, a second FFBSi of a blurred
    model), the sample-based ones a mirrored RMSE and a dynamics misfit."""
    from pipeline.smoothers.bench_twins import run_twins_bench

    args = (tmp_path, ["l63-abs"], 7, 5, 1, 4, 500, 5, 300, ["model.archive=256", "sampler.steps=8",
                                                            "sampler.corrections=0"], (1.0,))
    body, rows = run_twins_bench(*args)
    methods = [r["method"] for r in rows]
    assert methods == ["smoother (KDE)", "smoother (network)", "bootstrap PF filter", "bootstrap PF smoother (FFBSi)",
                       "bootstrap PF smoother (FFBSi), blurred model", "ETKF (spun up)", "ETKF (from the climatology)"]
    assert all(r["rmse"] > 0 for r in rows) and "RMSE mirrored" in body and "q'=1 (truth: 0.1)" in rows[4]["setting"]
    assert [r["mirrored"] is not None for r in rows] == [True, True, False, True, True, False, False]
    assert [r["misfit"] is not None for r in rows] == [True, True, False, True, True, False, False]
    assert rows[6]["setting"].endswith("the window's observations only, from the climatology")
    assert rows[3]["misfit"] < rows[4]["misfit"]  # the blurred model's trajectories follow the dynamics less
    assert "MLP 256x3, 5 steps on 300 cycles" in rows[1]["setting"]
    _, again = run_twins_bench(*args)
    assert again[1]["setting"].endswith("5 steps on 300 cycles, loaded") and again[1]["rmse"] == rows[1]["rmse"]
