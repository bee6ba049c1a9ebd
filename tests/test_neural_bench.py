"""Skill scores, network timing and the benchmark drivers on a tiny checkpoint; the shipped checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.models.network_checkpoint import GridLayout, check_compatible, read_meta
from pipeline.models.normalisation import Normalisation
from pipeline.models.skill import fair_crps, probabilistic_skill
from pipeline.models.train import TrainOptions, train

H, W = 8, 16


def _layout(c=2):
    return GridLayout(tuple(("temperature", 500.0 + 100 * i) for i in range(c)),
                      tuple(-90 + 180 * (i + 0.5) / H for i in range(H)), tuple(360 * j / W for j in range(W)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    g = torch.Generator().manual_seed(0)
    lon = torch.arange(W) * 2 * math.pi / W
    k = torch.arange(24, dtype=torch.float32)[:, None, None, None]
    z = torch.sin(lon - 0.3 * k) * torch.ones(1, 2, H, 1) + 0.05 * torch.randn(24, 2, H, W, generator=g)
    opts = TrainOptions(batch_size=4, base=8, mults=(1, 2), emb=16, warmup=2, steps=4, checkpoint_every=4, lr=1e-3)
    train(z, _layout(), Normalisation.from_trajectory(z), out, opts)
    return out, z


def test_fair_crps_matches_the_pairwise_formula():
    g = torch.Generator().manual_seed(1)
    ens, truth = torch.randn(5, 2, 3, 4, 6, generator=g), torch.randn(2, 3, 4, 6, generator=g)
    w = torch.ones(4, 1)
    got = fair_crps(ens, truth, w)
    m = ens.shape[0]
    first = (ens - truth).abs().mean(0)
    pair = sum((ens[i] - ens[j]).abs() for i in range(m) for j in range(m)) / (2 * m * (m - 1))
    torch.testing.assert_close(got, (first - pair).mean(dim=(0, 2, 3)))
    # one member: the absolute error
    torch.testing.assert_close(fair_crps(ens[:1], truth, w), (ens[0] - truth).abs().mean(dim=(0, 2, 3)))


def test_probabilistic_skill_runs_and_persistence_crps_is_mae(tiny):
    from pipeline.models.neural import NeuralDenoiser

    path, z = tiny
    den = NeuralDenoiser.from_checkpoint(path)
    out = probabilistic_skill(den, z[16:], z[:16], _layout(), members=3, times=2, steps=2)
    for name in ("model", "persistence", "climatology"):
        assert np.isfinite(out[name]["rmse"]) and np.isfinite(out[name]["crps"])
    assert out["persistence"]["crps"] <= out["persistence"]["rmse"] + 1e-9  # MAE <= RMSE


def test_net_timer_counts_forward_calls_and_guidance_vjps(tiny):
    from pipeline.diffusion.guidance.mmps import MMPS
    from pipeline.diffusion.observation import Observation
    from pipeline.models import neural

    path, z = tiny
    neural.NET_TIMER.enabled = True
    try:
        neural.NET_TIMER.reset()
        den = neural.NeuralDenoiser.from_checkpoint(path)
        cond = z[None, :2].expand(3, -1, -1, -1, -1)
        y = torch.full((2, H, W), float("nan"))
        y[0, ::2, ::2] = 0.0
        obs = Observation.from_field(y, 0.1)
        with torch.no_grad():
            den(torch.randn(3, 2, H, W), torch.full((3,), 0.5), cond)
            MMPS(den, obs, cg_iterations=2)(torch.randn(3, 2, H, W), torch.full((3,), 0.5), cond)
        t = neural.NET_TIMER
        assert t.forward_calls == 2 and t.backward_calls == 3 and t.items == 6
        assert t.forward_seconds > 0 and t.backward_seconds > 0
    finally:
        neural.NET_TIMER.enabled = False
        neural.NET_TIMER.reset()


def test_denoiser_bench_writes_rows(tiny):
    from pipeline.bench.bench_denoiser import run_denoiser_bench

    path, _ = tiny
    body, rows = run_denoiser_bench(path, [2], ["fp32", "bf16"], device="cpu", repeats=1, guided_batch=2,
                                    cg_iterations=1)
    assert len(rows) == 4 and all(r["rate"] > 0 for r in rows)
    assert rows[2]["rms_vs_fp32"] < 0.1 and "particle-steps" in body


def test_shipped_checkpoint_fits_the_sphere_grid():
    from pipeline.models.weights import SPHERE64X32, default_checkpoint

    if not (SPHERE64X32 / "meta.json").exists():
        pytest.skip("no shipped checkpoint in this checkout")
    path = default_checkpoint()
    meta = read_meta(path)
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 20e6
    channels = tuple((v, float(lv)) for v in ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
                     for lv in (250, 500, 850))
    layout = GridLayout(channels, tuple(-87.1875 + 5.625 * np.arange(32)), tuple(5.625 * np.arange(64)))
    check_compatible(meta, layout)
    from pipeline.models.neural import NeuralDenoiser

    den = NeuralDenoiser.from_checkpoint(path)
    with torch.no_grad():
        out = den(torch.zeros(2, 12, 32, 64), torch.ones(2), torch.zeros(2, den.history, 12, 32, 64))
    assert out.shape == (2, 12, 32, 64) and torch.isfinite(out).all()
    assert json.loads((path / "meta.json").read_text())["training"]["skill"]["skill_vs_persistence"] > 0
