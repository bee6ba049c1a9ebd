"""The sphere U-Net and the EDM-preconditioned neural denoiser (tiny networks, CPU)."""

import pytest
import torch

from pipeline.diffusion.schedules import EDM, VPCosine, VPLinear
from pipeline.models.gaussian import GaussianDenoiser
from pipeline.models.neural import NeuralDenoiser
from pipeline.models.normalisation import Normalisation
from pipeline.models.train import init_network
from pipeline.models.unet import SphereUNet, UNetConfig, sphere_pad


def tiny(channels=3, history=2, **kw):
    cfg = UNetConfig(channels=channels, history=history, base=8, mults=(1, 2), emb=16, **kw)
    net = init_network(cfg, seed=0)
    with torch.no_grad():  # non-zero output layers so the tests see the network, not just c_skip
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d) and not m.weight.abs().sum():
                m.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return net


@pytest.mark.parametrize("h,w,k", [(32, 64, 2), (16, 32, 1), (8, 12, 2)])
def test_shapes(h, w, k):
    net = tiny(history=k)
    x = torch.randn(2, 3, h, w)
    out = net(x, torch.randn(2, k, 3, h, w), torch.zeros(2))
    assert out.shape == (2, 3, h, w)
    with pytest.raises(ValueError, match="condition"):
        net(x, torch.randn(2, k + 1, 3, h, w), torch.zeros(2))


def test_sphere_pad_roll_crosses_the_pole():
    x = torch.arange(4 * 8, dtype=torch.float32).reshape(1, 1, 4, 8)
    p = sphere_pad(x, 1)
    assert p.shape == (1, 1, 6, 10)
    assert torch.equal(p[0, 0, 0, 1:-1], torch.roll(x[0, 0, 0], 4))  # over the first pole
    assert torch.equal(p[0, 0, -1, 1:-1], torch.roll(x[0, 0, -1], 4))
    assert torch.equal(p[0, 0, 1:-1, 0], x[0, 0, :, -1])  # circular in longitude
    assert torch.equal(p[0, 0, 1:-1, -1], x[0, 0, :, 0])


@pytest.mark.parametrize("pole", ["roll", "reflect", "zero"])
def test_longitude_equivariance(pole):
    net = tiny(pole=pole)
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 3, 16, 32, generator=g), torch.randn(2, 2, 3, 16, 32, generator=g)
    n = torch.tensor([0.3, -0.5])
    shift = 6  # a multiple of 2**(levels-1) = 2
    out = net(x, c, n)
    rolled = net(torch.roll(x, shift, -1), torch.roll(c, shift, -1), n)
    torch.testing.assert_close(rolled, torch.roll(out, shift, -1), atol=1e-5, rtol=1e-5)


def _denoiser(schedule, residual=True, zero=False, k=2):
    net = init_network(UNetConfig(channels=3, history=k, base=8, mults=(1, 2), emb=16), 0) if zero else tiny(history=k)
    norm = Normalisation((0.0,) * 3, (1.0,) * 3, (0.2, 0.5, 1.0) if residual else None)
    return NeuralDenoiser(net.double(), schedule, norm, residual=residual)


@pytest.mark.parametrize("schedule", [VPCosine(), VPLinear(), EDM()])
def test_untrained_network_is_the_exact_gaussian_denoiser(schedule):
    """F = 0 (zero output layer): D is the posterior mean of N(last state, sigma_data^2)."""
    den = _denoiser(schedule, zero=True)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(4, 2, 3, 8, 16, generator=g, dtype=torch.float64)
    x_t = torch.randn(4, 3, 8, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)[:, None, None] ** 2
    exact = GaussianDenoiser(schedule, lambda c: c[:, -1], q)(x_t, t, cond)
    torch.testing.assert_close(den(x_t, t, cond), exact)


def test_schedules_agree_through_the_edm_variable():
    """d_VP(x_t, t) = D(x_t / alpha_t, sigma_t / alpha_t) = d_EDM(x_t / alpha_t, t') with sigma_EDM(t') = sigma_t / alpha_t."""
    vp = _denoiser(VPCosine())
    edm = NeuralDenoiser(vp.net, EDM(sigma_min=1e-3, sigma_max=1e3), vp.normalisation)
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(3, 2, 3, 8, 16, generator=g, dtype=torch.float64)
    z = torch.randn(3, 3, 8, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    alpha, sigma_t = vp.schedule(t)
    x_t = alpha[:, None, None, None] * z + sigma_t[:, None, None, None] * torch.randn_like(z)
    sigma = sigma_t / alpha
    e = edm.schedule
    a, b = e.sigma_min ** (1 / e.rho), e.sigma_max ** (1 / e.rho)
    t_edm = (sigma ** (1 / e.rho) - a) / (b - a)  # invert the EDM schedule
    out_vp = vp(x_t, t, cond)
    out_edm = edm(x_t / alpha[:, None, None, None], t_edm, cond)
    torch.testing.assert_close(out_vp, out_edm)
    torch.testing.assert_close(out_vp, vp.edm(x_t / alpha[:, None, None, None], sigma, cond))


def test_low_noise_returns_the_input_and_grad_flows():
    den = _denoiser(VPLinear(), residual=False)
    x = torch.randn(2, 3, 8, 16, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 2, 3, 8, 16, dtype=torch.float64)
    out = den.edm(x, torch.full((2,), 1e-6, dtype=torch.float64), cond)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)
    den(x, torch.tensor(0.5), cond).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_history_one_accepts_a_plain_state_and_bf16_autocast_runs():
    den = _denoiser(EDM(), k=1)
    den.net.float()
    den.autocast_dtype = torch.bfloat16
    x, cond = torch.randn(2, 3, 8, 16), torch.randn(2, 3, 8, 16)
    out = den(x, torch.tensor(0.5), cond)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_edm_sampler_draws_the_gaussian_prior_of_an_untrained_network():
    """F = 0: the model is N(last state, s^2); Heun probability-flow samples have that mean and std."""
    from pipeline.models.skill import sample_edm

    den = _denoiser(EDM(), zero=True)
    cond = torch.randn(1, 2, 3, 8, 16, dtype=torch.float64).expand(64, -1, -1, -1, -1)
    z = sample_edm(den, cond, torch.Generator().manual_seed(0), steps=24)
    dev = z - cond[:, -1]
    torch.testing.assert_close(dev.std(dim=(0, 2, 3)), torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64), rtol=0.05, atol=0)
    assert dev.mean().abs() < 0.02
