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
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from era5_stores import era5_dataset, write_store
from pipeline.cli import main
from pipeline.data.observe import ObservationSpec, build_observations, write_observations
from pipeline.diffusion.schedules import make_schedule
from pipeline.models.network_checkpoint import GridLayout, read_meta, save_checkpoint
from pipeline.models.normalisation import Normalisation
from pipeline.models.train import TRAIN_STATE, TrainOptions, init_network
from pipeline.models.window_mlp import WindowMLPConfig
from pipeline.models.window_unet import WindowUNetConfig
from pipeline.smoothers.compose import TrajectoryDenoiser
from pipeline.smoothers.neural import NeuralWindowDenoiser, make_grid_meta, make_meta
from pipeline.smoothers.train_window import train_window_from_store

VARIABLES, LEVELS, NT, K = ("temperature", "u_component_of_wind"), (500, 850), 30, 1
TINY = dict(base=8, mults=(1, 2), emb=16)
SMOOTH = ["--set", "data.preset=era5", "--set", "model=neural", "--set", f"smoother.window_half_width={K}",
          "--set", "sampler.steps=16", "--set", "guidance=mmps", "--set", "guidance.covariance=diagonal"]


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


def test_smooth_grid_writes_the_filter_layout_and_the_exact_posterior(grid, tmp_path):
    root, ds = grid
    out, start, length, samples = tmp_path / "out", 2, 5, 64
    rc = main(["smooth", "--data", str(root / "data"), "--out", str(out), *SMOOTH,
               "--set", f"model.checkpoint={root / 'net'}", "--set", f"run.start={start}",
               "--set", f"run.cycles={length}", "--set", f"smoother.samples={samples}", "--set", "run.members=true"])
    assert rc == 0
    a = xr.open_zarr(out / "analysis.zarr")
    assert a.attrs["complete"] == 1 and a.attrs["method"] == "smoother"
    np.testing.assert_array_equal(a.time.values, ds.time.values[start + 1:start + 1 + length])
    np.testing.assert_array_equal(a.latitude.values, ds.latitude.values)
    assert list(a.level.values) == [500.0, 850.0]
    for v in VARIABLES:  # the layout diffda run writes on a grid
        assert a[v].dims == a[f"{v}_spread"].dims == ("time", "level", "latitude", "longitude")
        assert a[f"{v}_members"].dims == ("time", "member", "level", "latitude", "longitude")
        assert a[v].attrs["units"] == ds[v].attrs["units"]
        np.testing.assert_allclose(a[v].values, a[f"{v}_members"].values.mean(1), rtol=1e-6)
    for name in ("rmse_analysis", "spread_analysis", "crps_analysis"):
        assert a[name].dims == ("time",) and np.isfinite(a[name].values).all()
    m = json.loads((out / "metrics.json").read_text())
    assert m["window"] == length and m["samples"] == samples and m["wall_seconds"] > m["denoiser_seconds"] > 0
    assert (out / "smooth.png").stat().st_size > 0
    # against the exact posterior of the independent prior, in normalised units
    norm = Normalisation.from_dict(read_meta(root / "net")["normalisation"])
    mu, s = (np.asarray(v)[:, None, None] for v in (norm.mean, norm.std))
    z = lambda x: (x - mu) / s  # noqa: E731  [..., C, H, W]
    analysis = z(fields(a))
    obs = xr.open_zarr(root / "data" / "observations.zarr").sel(time=a.time)
    y = np.full_like(analysis, np.nan)  # observed: temperature (channels 0, 1), NaN elsewhere
    y[:, :2] = (obs.temperature.sel(level=list(LEVELS)).values - mu[:2]) / s[:2]
    r2 = (2.0 / s[:, 0, 0]) ** 2
    seen = np.isfinite(y)
    assert seen[:, :2, ::2, ::2].all() and seen.sum() == length * 2 * 2 * 4  # every 2nd point, temperature only
    exact_mean = np.where(seen, np.nan_to_num(y) / (1 + r2[:, None, None]), 0.0)
    exact_var = np.where(seen, np.broadcast_to((r2 / (1 + r2))[:, None, None], y.shape[1:]), 1.0)
    spread = (a["temperature_spread"].values / s[:2]), (a["u_component_of_wind_spread"].values / s[2:])
    var_s = np.concatenate(spread, axis=1) ** 2
    ratio = np.sqrt(((analysis - exact_mean) ** 2).mean() / (var_s.mean() / samples))
    print(f"RMS(m_S - m) / MC standard error {ratio:.3f}; spread / exact {np.sqrt(var_s.mean() / exact_var.mean()):.3f}")
    assert 0.85 < ratio < 1.15, ratio
    assert abs(np.sqrt(var_s.mean() / exact_var.mean()) - 1) < 0.15  # 16 probability-flow steps: 0.93 measured
    truth = z(fields(ds.isel(time=slice(start + 1, start + 1 + length))))
    np.testing.assert_allclose(a.rmse_analysis.values, np.sqrt(((analysis - truth) ** 2).mean(axis=(1, 2, 3))),
                               rtol=1e-5)


def test_refusals_before_any_work(grid, tmp_path, capsys):
    """Each refusal exits 2 naming its key and writes nothing."""
    root, ds = grid
    other_grid = untrained(tmp_path / "grid16", dataset(nlat=8, nlon=16))
    other_levels = untrained(tmp_path / "levels", dataset(levels=(250, 500)))
    twin_net = tmp_path / "twin"
    config = WindowMLPConfig(width=3, dim=4, hidden=8, depth=1, emb=16)
    save_checkpoint(twin_net, init_network(config, 0),
                    make_meta(config, 1, torch.zeros(4), torch.ones(4), {"preset": "linear", "dim": 4}))
    cases = [
        (["--set", f"model.checkpoint={root / 'net'}", "--set", "run.cycles=2"], "smoother.window_half_width"),
        (["--set", f"model.checkpoint={root / 'net'}", "--set", "smoother.window_half_width=2"],
         "smoother.window_half_width=2 needs 2k\\+1 = 5"),
        (["--set", f"model.checkpoint={other_grid}"], "model.checkpoint=.*latitude differs"),
        (["--set", f"model.checkpoint={other_levels}"], "model.checkpoint=.*no level 250"),
        (["--set", f"model.checkpoint={twin_net}"], "model.checkpoint=.*holds a window-mlp network"),
        (["--set", "model=gaussian"], "needs model=neural with model.checkpoint"),
        (["--set", "model.checkpoint=pipeline/models/weights/sphere64x32"], "holds a sphere-unet network"),
        (["--set", f"model.checkpoint={root / 'net'}", "--set", "guidance.covariance=jacobian"],
         "guidance.covariance=jacobian is refused"),
    ]
    for extra, message in cases:
        out = tmp_path / "o"
        rc = main(["smooth", "--data", str(root / "data"), "--out", str(out), *SMOOTH, "--set", "run.cycles=5", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and re.search(message, err, re.S), (extra, err[-600:])
        assert not (out / "analysis.zarr").exists()
    # a grid's window network is no emulator (diffda run), nor a twin's window prior
    from pipeline.errors import InputError
    from pipeline.models.neural import NeuralDenoiser

    with pytest.raises(InputError, match="model.checkpoint=.* holds a window-unet network"):
        NeuralDenoiser.from_checkpoint(root / "net")
    assert main(["make-data", "linear", "--out", str(tmp_path / "lin"), "--set", "cycles=20", "--set", "dim=4"]) == 0
    rc = main(["smooth", "--data", str(tmp_path / "lin"), "--out", str(tmp_path / "o"), "--set", "data.preset=linear",
               "--set", "model=neural", "--set", f"model.checkpoint={root / 'net'}", "--set", "guidance=sda",
               "--set", "smoother.window_half_width=1", "--set", "run.cycles=5"])
    assert rc == 2 and "holds a window-unet network" in capsys.readouterr().err


def test_gridded_smoothing_campaign_writes_each_window_once(grid, tmp_path):
    """``diffda campaign --kind smooth`` on the gridded store (without SLURM: the local profile's job, every
    window in order): two windows of 6 observation times, each an ``analysis.zarr`` in the filter's gridded
    layout over its own times; a second pass skips both (their markers and stores are not written again)."""
    from jobs import campaign

    root, ds = grid
    config = tmp_path / "smooth-grid.yaml"
    config.write_text(f"data:\n  preset: era5\nmodel:\n  kind: neural\n  checkpoint: {root / 'net'}\n"
                      f"smoother:\n  window_half_width: {K}\n  samples: 8\nsampler:\n  steps: 8\n"
                      "guidance:\n  method: mmps\n  covariance: diagonal\n")
    manifest, _ = campaign.create(config, [], root / "data", tmp_path / "campaign", "local", "2020-01-01T06",
                                  "2020-01-04T06", "36h", "independent", None, 2, kind="smooth")
    ws = manifest["windows"]
    assert [(w["run_start"], w["cycles"]) for w in ws] == [(0, 6), (6, 6)]
    job = campaign.WindowSequence([campaign.window_job(manifest, w) for w in ws])
    job.work(lambda: False)
    stamps = []
    for w in ws:
        out = Path(w["out"])
        got = xr.open_zarr(out / "analysis.zarr").load()
        times = ds.time.values[1 + w["run_start"]:1 + w["run_start"] + 6]
        assert int(got.attrs["complete"]) == 1 and np.array_equal(got.time.values, times)
        assert {"temperature", "temperature_spread", "u_component_of_wind"} <= set(got.data_vars)
        assert np.isfinite(got.temperature.values).all()
        stamps.append(((out / "metrics.json").stat().st_mtime_ns, (out / "analysis.zarr").stat().st_ino))
    job.work(lambda: False)
    assert stamps == [((Path(w["out"]) / "metrics.json").stat().st_mtime_ns,
                       (Path(w["out"]) / "analysis.zarr").stat().st_ino) for w in ws]
