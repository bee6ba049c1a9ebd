"""The smoother on gridded data: the window U-Net (``diffda train --set kind=window-unet``) and ``diffda smooth``
with ``data.preset=era5`` on a small ERA5-layout store built here (2 variables x 2 levels on an 8x4 grid).

Oracle. At initialisation the U-Net's output convolution is zero, so ``F = 0`` and the window denoiser is
``D(z_sigma, sigma) = z_sigma / (1 + sigma²)``, the exact posterior mean of the independent prior ``N(0, I)`` in
normalised units, i.e. ``N(mean_c, std_c²)`` per channel in physical units (checked to round-off). Composed
over a window, that prior is independent across times too, so with identity observations ``y_z`` of variance
``r²`` (``r = noise_std / std_c``) the smoother's exact posterior is, per entry, ``N(y_z / (1 + r²), r² / (1 + r²))``
where observed and ``N(0, 1)`` elsewhere. MMPS with the denoiser's diagonal variance is then the exact
posterior denoiser and the sampler preserves its mean, so the smoothed mean of ``S`` samples differs from the
exact one by Monte-Carlo error alone: ``E|m_S - m|² = v / S`` per entry, so over the ``N`` entries
``RMS(m_S - m) / sqrt(mean(v_S) / S)`` is 1 within a few ``1 / sqrt(2 N)`` (N = 640 here: 0.03).
"""

import numpy as np
import pytest
import torch

from era5_stores import era5_dataset, write_store
from pipeline.cli import main
from pipeline.data.observe import ObservationSpec, build_observations, write_observations
from pipeline.diffusion.schedules import make_schedule
from pipeline.models.network_checkpoint import GridLayout, read_meta, save_checkpoint
from pipeline.models.normalisation import Normalisation
from pipeline.models.train import TRAIN_STATE, TrainOptions, init_network
from pipeline.models.window_unet import WindowUNetConfig
from pipeline.smoothers.compose import TrajectoryDenoiser
from pipeline.smoothers.neural import NeuralWindowDenoiser, make_grid_meta
from pipeline.smoothers.train_window import train_window_from_store

VARIABLES, LEVELS, NT, K = ("temperature", "u_component_of_wind"), (500, 850), 30, 1
TINY = dict(base=8, mults=(1, 2), emb=16)


def dataset(nlat=4, nlon=8, levels=LEVELS):
    return era5_dataset(nt=NT, nlat=nlat, nlon=nlon, levels=levels, variables=VARIABLES)


def make_data(path, ds):
    path.mkdir(parents=True, exist_ok=True)
    write_store(ds, path / "truth.zarr")
    spec = ObservationSpec(noise_std={"temperature": 2.0})  # temperature, every 2nd point, both levels
    write_observations(build_observations(ds.isel(time=slice(1, None)), spec), path / "observations.zarr")
    return path


def layout_of(ds) -> GridLayout:
    return GridLayout(tuple((v, float(lv)) for v in VARIABLES for lv in ds.level.values),
                      tuple(map(float, ds.latitude.values)), tuple(map(float, ds.longitude.values)))


def fields(ds) -> np.ndarray:
    """``[T, C, H, W]`` in the layout's channel order."""
    return np.stack([ds[v].sel(level=lv).values for v in VARIABLES for lv in ds.level.values], axis=1)


def untrained(path, ds, k=K):
    """A window-unet checkpoint at initialisation (``F = 0``), normalised by the store's statistics."""
    x = torch.from_numpy(fields(ds)).double()
    c, h, w = x.shape[1:]
    config = WindowUNetConfig(width=2 * k + 1, channels=c, latitudes=h, longitudes=w, **TINY)
    net = init_network(config, seed=0)
    save_checkpoint(path, net, make_grid_meta(config, k, layout_of(ds), Normalisation.from_trajectory(x, residual=False)))
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid-smoother")
    ds = dataset()
    make_data(root / "data", ds)
    untrained(root / "net", ds)
    return root, ds


def test_untrained_window_unet_is_the_independent_posterior_mean(grid):
    """``F = 0`` exactly, so the window and the composed trajectory denoisers are ``z_sigma / (1 + sigma²)`` in
    normalised units and ``mean_c + std_c² / (std_c² + (sigma std_c)²) (x_sigma - mean_c)`` in physical ones."""
    root, ds = grid
    schedule = make_schedule("vp-cosine")
    den = NeuralWindowDenoiser.from_checkpoint(root / "net", schedule, K, layout_of(ds))
    norm = Normalisation.from_dict(read_meta(root / "net")["normalisation"])
    c, h, w = 4, 4, 8
    assert den.width == 3 and den.dim == c * h * w and den.s_bar == 1.0
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(fields(ds)[:5]).double()  # 5 physical states [5, C, H, W]
    z = norm.normalise(x).reshape(1, 5, -1)
    with torch.no_grad():
        f = den.net(torch.randn(2, 3, den.dim, generator=g, dtype=torch.float64).float(), torch.tensor([0.1, -0.4]))
    assert torch.count_nonzero(f) == 0
    traj = TrajectoryDenoiser(den, K)
    for t in (0.05, 0.3, 0.7, 0.95):
        alpha, sigma_t = schedule(torch.tensor(t, dtype=torch.float64))
        sigma = float(sigma_t / alpha)
        z_t = alpha * (z + sigma * torch.randn(z.shape, generator=g, dtype=torch.float64))
        with torch.no_grad():
            d = traj(z_t, torch.tensor(t, dtype=torch.float64))
        torch.testing.assert_close(d, z_t / alpha / (1 + sigma**2), rtol=1e-12, atol=1e-12)
        # physical units: noise sigma * std_c on channel c, prior N(mean_c, std_c²)
        s = torch.tensor(norm.std, dtype=torch.float64)[:, None, None]
        mu = torch.tensor(norm.mean, dtype=torch.float64)[:, None, None]
        x_sigma = norm.denormalise((z_t / alpha).reshape(5, c, h, w))
        exact = mu + s**2 / (s**2 + (sigma * s) ** 2) * (x_sigma - mu)
        torch.testing.assert_close(norm.denormalise(d.reshape(5, c, h, w)), exact, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(den.variance(z_t[0, :3][None], torch.tensor(t)).expand(1, 3, den.dim),
                                   torch.full((1, 3, den.dim), sigma**2 / (1 + sigma**2), dtype=torch.float64))


def test_train_window_unet_checkpoint_and_resumption(grid, tmp_path):
    """``diffda train --set kind=window-unet``: the checkpoint names its kind, width, channels, grid and the
    training part's per-channel statistics; stopped and resumed, it ends with the bytes of an uninterrupted run."""
    root, ds = grid
    out = tmp_path / "ck"
    rc = main(["train", "--data", str(root / "data"), "--out", str(out), "--set", "kind=window-unet",
               "--set", f"window_half_width={K}", "--set", "steps=4", "--set", "batch_size=4", "--set", "base=8",
               "--set", "mults=[1, 2]", "--set", "emb=16", "--set", "checkpoint_every=2", "--set", "threads=1"])
    assert rc == 0
    meta = read_meta(out)
    assert meta["architecture"]["kind"] == "window-unet" and meta["architecture"]["channels"] == 4
    assert meta["window"] == {"half_width": K, "width": 2 * K + 1, "dim": 4 * 4 * 8}
    assert GridLayout.from_meta(meta) == layout_of(ds)
    x = fields(ds)[: NT - int(round(0.1 * NT))].astype(np.float64)  # the training times (val_fraction 0.1)
    np.testing.assert_allclose(meta["normalisation"]["mean"], x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(meta["normalisation"]["std"], x.std(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    assert meta["normalisation"]["residual_std"] is None and len(meta["training"]["denoising"]["sigma"]) == 4
    opts = TrainOptions(kind="window-unet", window_half_width=K, steps=4, batch_size=4, checkpoint_every=2,
                        warmup=2, **TINY)
    train_window_from_store(root / "data", tmp_path / "split", opts, stop_at=2)
    assert torch.load(tmp_path / "split" / TRAIN_STATE, weights_only=False)["step"] == 2
    train_window_from_store(root / "data", tmp_path / "split", opts)
    train_window_from_store(root / "data", tmp_path / "full", opts)
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == (tmp_path / "split" / "model.safetensors").read_bytes()
