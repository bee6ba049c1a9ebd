"""The closed-form KDE filter (Binder & Oberai): black-box H, the large-N linear-Gaussian limit,
and its keys validated at the edge."""

import math

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.diffusion.observation import Observation, ObservationOperator
from pipeline.diffusion.schedules import VPCosine
from pipeline.distributed.comm import LocalComm
from pipeline.filters.ensemble import Ensemble, weighted_moments
from pipeline.filters.kalman import kalman_step
from pipeline.filters.kde import KDEFilter, scott_factor
from pipeline.filters.propagate import Propagator
from pipeline.models.dynamics import Linear, Lorenz63
from pipeline.models.gaussian import GaussianDenoiser
from pipeline.rng import ParticleNoise


class NoDerivative(ObservationOperator):
    """``|x|[index]`` evaluated in NumPy (no graph at all); its derivative and adjoint raise."""

    def __call__(self, x):
        return torch.from_numpy(np.abs(x.flatten(1).detach().numpy()[:, self.index.numpy()]))

    def derivative(self, x):
        raise AssertionError("the KDE filter asked for a derivative of H")

    def adjoint(self, v, x):
        raise AssertionError("the KDE filter asked for an adjoint of H")


def make_filter(dynamics, q, dim, seed=0, bw=1.0, steps=32, micro=0):
    den = GaussianDenoiser(VPCosine(), dynamics, q)
    prop = Propagator(den, steps=steps, eta=0.0, corrections=0, delta=0.1, t_min=1e-3, grid="uniform",
                      guidance="dps", guidance_options={}, micro_batch=micro, seed=seed)
    return KDEFilter(LocalComm(), prop, (dim,), bw, bw)


def test_runs_with_an_operator_that_has_no_derivative():
    n, truth = 40, torch.tensor([1.0, 2.0, 20.0], dtype=torch.float64)
    f = make_filter(Lorenz63(steps=10), 0.0, 3)
    ids = torch.arange(n)
    ens = Ensemble(ids, truth + ParticleNoise(0, 0, ids, "init").normal(None, (3,)),
                   torch.full((n,), -math.log(n), dtype=torch.float64))
    for k in range(1, 6):
        truth = Lorenz63(steps=10)(truth[None])[0]
        y = truth.abs() + 0.5 * torch.randn(3, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        obs = Observation(y, torch.full((3,), 0.25, dtype=torch.float64), NoDerivative(torch.arange(3)))
        result = f.cycle(ens, k, obs)
        ens = result.next
        assert torch.isfinite(ens.x).all() and 1.0 <= result.diagnostics.ess <= n
    assert torch.allclose(torch.exp(ens.log_w).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_large_n_linear_gaussian_analysis_mean_tends_to_kalman():
    r"""One cycle of the linear twin from N(mu0, I), N = 2000, observing every 2nd of 4 components.

    As N grows, the KDE posterior mean tends to the Kalman mean with prior ``P_f + diag(h_x^2)`` and
    noise ``R + diag(h_y^2)`` (the kernels add to the covariances; kde.py), ``h`` Scott's rule on the
    true spreads. Monte-Carlo SE per component: ``sqrt(P_a / ESS + (P_a + h_x^2) / N)`` (the weighted
    centres, then the mean of N members drawn from the mixture); 5 SE. Against the exact Kalman filter
    (``h = 0``) the allowance adds the kernel bias ``|KF_h - KF|``, computed, not tuned.
    """
    n, dim, q, r = 2000, 4, 0.1, 0.25
    lin = Linear(0.95, 0.25)
    A = lin.matrix(dim)
    H = torch.eye(dim, dtype=torch.float64)[::2]
    mu0 = torch.tensor([1.0, -0.5, 0.3, 0.8], dtype=torch.float64)
    y = torch.tensor([0.4, 0.9], dtype=torch.float64)
    y_field = torch.full((dim,), float("nan"), dtype=torch.float64)
    y_field[::2] = y
    f = make_filter(lin, q, dim, seed=3, steps=64, micro=250)
    ids = torch.arange(n)
    ens = Ensemble(ids, mu0 + ParticleNoise(3, 0, ids, "init").normal(None, (dim,)),
                   torch.full((n,), -math.log(n), dtype=torch.float64))
    result = f.cycle(ens, 1, Observation.from_field(y_field, r))
    mean, _ = weighted_moments(LocalComm(), result.analysis.x, result.analysis.log_w)

    Pf = A @ A.T + q * torch.eye(dim, dtype=torch.float64)
    factor = scott_factor(n, dim + 2)
    hx2 = (factor**2) * Pf.diagonal()
    hy2 = (factor**2) * ((H @ Pf @ H.T).diagonal() + r)
    R = r * torch.eye(2, dtype=torch.float64)
    eye = torch.eye(dim, dtype=torch.float64)
    _, _, kf_h, Pa_h = kalman_step(mu0, eye, A, q * eye + torch.diag(hx2), H, R + torch.diag(hy2), y)
    _, _, kf, _ = kalman_step(mu0, eye, A, q * eye, H, R, y)
    se = torch.sqrt(Pa_h.diagonal() / result.diagnostics.ess + (Pa_h.diagonal() + hx2) / n)
    assert (mean - kf_h).abs().le(5 * se).all(), (mean, kf_h, se)
    assert (mean - kf).abs().le((kf_h - kf).abs() + 5 * se).all()
    assert 0.2 * n < result.diagnostics.ess < n  # two observations: weights spread but far from collapse


@pytest.mark.parametrize("key", ["filter.kde_bandwidth_x", "filter.kde_bandwidth_y"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_bandwidth_factors_validated(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=["data.preset=lorenz63", "filter.method=kde", f"{key}={value}"])
