"""The gridded problem end to end on small ERA5-layout stores built here (model=gaussian AR(1))."""

import numpy as np
import pytest
import xarray as xr

from era5_stores import era5_dataset, write_store
from pipeline.config import load_config
from pipeline.data.gridded import load_gridded
from pipeline.data.observe import ObservationSpec, build_observations, write_observations
from pipeline.errors import InputError
from pipeline.run import assimilate

TIMING = {"cycle_seconds", "denoiser_seconds", "comm_seconds", "resample_seconds"}
BASE = ["data.preset=era5", "filter.particles=6", "sampler.steps=4", "filter.init_std=0.1", "run.dtype=float64"]


def _data(tmp_path, ascending=True, nt=5, spec=None, levels=(250, 500, 850), obs_ds=None):
    ds = era5_dataset(nt=nt, ascending=ascending, levels=levels)
    write_store(ds, tmp_path / "truth.zarr")
    obs = obs_ds if obs_ds is not None else build_observations(ds.isel(time=slice(1, None)), spec or ObservationSpec())
    write_observations(obs, tmp_path / "observations.zarr")
    return ds


def _cfg(*extra):
    return load_config(overrides=[*BASE, *extra])


def _same_store(a, b):
    for v in a.data_vars:
        if v not in TIMING:
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


@pytest.mark.parametrize("ascending", [True, False])
def test_run_writes_physical_fields_in_the_reference_layout(tmp_path, ascending):
    ds = _data(tmp_path, ascending=ascending, spec=ObservationSpec(levels=(250, 850)))
    result = assimilate(_cfg("run.members=true", "data.levels=[850, 250]"), tmp_path, tmp_path / "out")
    out = xr.open_zarr(tmp_path / "out" / "analysis.zarr")
    assert out.attrs["complete"] == 1 and result.metrics["cycles"] == 4
    assert out.temperature.dims == ("time", "level", "latitude", "longitude")
    assert list(out.level.values) == [250.0, 850.0]
    np.testing.assert_array_equal(out.latitude.values, ds.latitude.values)
    np.testing.assert_array_equal(out.time.values, ds.time.values[1:])
    assert out.temperature_members.dims == ("time", "member", "level", "latitude", "longitude")
    assert out.temperature.attrs["units"] == "K" and out.geopotential_spread.attrs["units"] == "m**2 s**-2"
    # physical units, close to the truth where temperature is observed
    truth = ds.temperature.sel(level=[250, 850]).values[1:]
    err = np.abs(out.temperature.values - truth)
    clim = np.abs(truth - truth.mean()).mean()
    seen = np.zeros(truth.shape[-2:], bool)
    seen[np.argsort(np.argsort(ds.latitude.values)) % 2 == 0, ::2] = True
    assert np.isfinite(out.temperature.values).all()
    assert err[..., seen].mean() < 1.0 < clim and err.mean() < 0.75 * clim, (err[..., seen].mean(), err.mean(), clim)
    assert (out.temperature_spread.values >= 0).all()


KILLER = r"""
import os, signal, sys
from pathlib import Path
from pipeline.config import load_config
from pipeline.run import assimilate

def progress(k, n, diag):
    if k == 2:  # after cycle 2 is written and checkpointed, while cycle 3's inputs are being prefetched
        os.kill(os.getpid(), signal.SIGKILL)

assimilate(load_config(overrides=sys.argv[3:]), Path(sys.argv[1]), Path(sys.argv[2]), progress=progress)
"""


def test_killed_between_cycles_and_rerun_matches_uninterrupted(tmp_path):
    import signal
    import subprocess
    import sys

    _data(tmp_path, nt=6)
    assimilate(_cfg(), tmp_path, tmp_path / "whole")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), str(tmp_path / "killed"), *BASE], timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert xr.open_zarr(tmp_path / "killed" / "analysis.zarr", consolidated=False).attrs["complete"] == 0
    result = assimilate(_cfg(), tmp_path, tmp_path / "killed")
    assert result.resumed_from == 2
    _same_store(xr.open_zarr(tmp_path / "whole" / "analysis.zarr"), xr.open_zarr(tmp_path / "killed" / "analysis.zarr"))


def test_nan_observations_change_nothing(tmp_path):
    """A store that adds an all-NaN variable and NaN levels gives the same analysis as one without."""
    ds = era5_dataset(nt=4)
    base = build_observations(ds.isel(time=slice(1, None)), ObservationSpec(levels=(500,)))
    padded = build_observations(ds.isel(time=slice(1, None)), ObservationSpec(variables=("temperature", "u_component_of_wind")))
    padded["temperature"] = padded.temperature.where(padded.level == 500)
    padded["u_component_of_wind"] = padded.u_component_of_wind * np.nan
    padded["u_component_of_wind"].attrs["noise_std"] = 2.0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _data(tmp_path / "a", nt=4, obs_ds=base)
    _data(tmp_path / "b", nt=4, obs_ds=padded)
    assimilate(_cfg(), tmp_path / "a", tmp_path / "out_a")
    assimilate(_cfg(), tmp_path / "b", tmp_path / "out_b")
    _same_store(xr.open_zarr(tmp_path / "out_a" / "analysis.zarr"), xr.open_zarr(tmp_path / "out_b" / "analysis.zarr"))


def test_observations_are_normalised_consistently(tmp_path):
    import torch

    _data(tmp_path, nt=4)
    p = load_gridded(_cfg(), tmp_path, torch.device("cpu"), torch.float64)
    obs, truth = p.observation(1), p.truth(1)
    std = torch.tensor(p.normalisation.std, dtype=torch.float64)
    c = obs.operator.index // (8 * 16)  # channel of each observed entry
    assert set(c.tolist()) == {p.layout.channels.index(("temperature", lv)) for lv in (250.0, 500.0, 850.0)}
    torch.testing.assert_close(obs.variance, 1.0 / std[c] ** 2)  # 1 K noise in normalised units
    r = (obs.y - truth.flatten()[obs.operator.index]) * std[c]  # back in kelvin
    assert 0.6 < float(r.std()) < 1.4
    p.close()


def test_input_problems_are_named(tmp_path):
    import torch

    dev = torch.device("cpu")
    ds = _data(tmp_path, nt=5)
    # an observation time missing inside the window
    write_observations(build_observations(ds.isel(time=[1, 2, 4])), tmp_path / "observations.zarr")
    with pytest.raises(InputError, match="lack 1 cycle time.*2020-01-01T18:00"):
        load_gridded(_cfg(), tmp_path, dev, torch.float64)
    # observations on another grid
    other = era5_dataset(nt=5, nlat=4, nlon=8)
    write_observations(build_observations(other.isel(time=slice(1, None))), tmp_path / "observations.zarr")
    with pytest.raises(InputError, match="grid 8x4"):
        load_gridded(_cfg(), tmp_path, dev, torch.float64)
    # a variable the state lacks
    write_observations(build_observations(ds.isel(time=slice(1, None))), tmp_path / "observations.zarr")
    with pytest.warns(UserWarning, match="temperature@250, temperature@850 are not in the model state"):
        load_gridded(_cfg("data.levels=[500]"), tmp_path, dev, torch.float64).close()
    with pytest.raises(InputError, match="observes nothing of the model state"):
        load_gridded(_cfg("data.variables=[geopotential]"), tmp_path, dev, torch.float64)
    with pytest.raises(InputError, match="'specific_humidity'"):
        load_gridded(_cfg("data.variables=[temperature, specific_humidity]"), tmp_path, dev, torch.float64)
    with pytest.raises(InputError, match="run.cycles=9"):
        load_gridded(_cfg("run.cycles=9"), tmp_path, dev, torch.float64)


def _checkpoint(tmp_path, history=2):
    import torch

    from pipeline.models.network_checkpoint import GridLayout, make_meta, save_checkpoint
    from pipeline.models.normalisation import Normalisation
    from pipeline.models.train import init_network
    from pipeline.models.unet import UNetConfig

    ds = era5_dataset(nt=1)
    lay = GridLayout(tuple((v, lv) for v in ("temperature", "geopotential") for lv in (250.0, 500.0, 850.0)),
                     tuple(ds.latitude.values), tuple(ds.longitude.values))
    cfg = UNetConfig(channels=6, history=history, base=8, mults=(1, 2), emb=16)
    net = init_network(cfg, seed=0)
    mean = tuple(float(ds[v].sel(level=lv).mean()) for v, lv in lay.channels)
    std = tuple(float(ds[v].sel(level=lv).std()) for v, lv in lay.channels)
    meta = make_meta(cfg, lay, Normalisation(mean, std, (0.3,) * 6), schedule={"kind": "vp-cosine", "params": {}})
    save_checkpoint(tmp_path / "ckpt", net, meta)
    del torch
    return tmp_path / "ckpt", meta


def test_neural_checkpoint_sets_channels_history_and_refuses_another_grid(tmp_path):
    ckpt, meta = _checkpoint(tmp_path)
    ds = _data(tmp_path / "data", nt=6) if (tmp_path / "data").mkdir() is None else None
    cfg = _cfg("model=neural", f"model.checkpoint={ckpt}", "filter.particles=4", "sampler.steps=2", "guidance=dps")
    result = assimilate(cfg, tmp_path / "data", tmp_path / "out")
    out = xr.open_zarr(tmp_path / "out" / "analysis.zarr")
    assert sorted(v for v in out.data_vars if not v.endswith("_spread") and out[v].ndim == 4) == ["geopotential", "temperature"]
    np.testing.assert_array_equal(out.time.values, ds.time.values[2:])  # history 2: cycle 1 is the third time
    assert result.metrics["cycles"] == 4 and np.isfinite(out.temperature.values).all()
    # the same data stored latitude-descending: refused by name, accepted with data.regrid=true
    (tmp_path / "desc").mkdir()
    _data(tmp_path / "desc", nt=6, ascending=False)
    import torch

    with pytest.raises(InputError, match="latitude runs the other way"):
        load_gridded(cfg, tmp_path / "desc", torch.device("cpu"), torch.float64)
    p = load_gridded(_cfg("model=neural", f"model.checkpoint={ckpt}", "data.regrid=true"), tmp_path / "desc",
                     torch.device("cpu"), torch.float64)
    assert p.layout.latitude == tuple(meta["grid"]["latitude"])
    p.close()


def test_climatological_initial_ensemble_is_archive_states_keyed_per_particle(tmp_path):
    """``filter.init_climatology``: particle i's K history states are K consecutive states of the archive
    (the data's channel order, normalised), at a time drawn from particle i's own stream: the same for a
    particle whichever other particles are drawn with it (rank invariance); a mismatched archive is
    refused by name before anything is written."""
    import torch

    from pipeline.run import _initial_ensemble
    from pipeline.distributed.comm import LocalComm

    ckpt, _ = _checkpoint(tmp_path)
    (tmp_path / "data").mkdir()
    _data(tmp_path / "data", nt=6)
    # the archive: another trajectory, latitude descending and variables in another order (reordered on read)
    (tmp_path / "arch").mkdir()
    arch = era5_dataset(nt=12, seed=3, ascending=False)
    arch = arch[list(reversed(list(arch.data_vars)))]
    write_store(arch, tmp_path / "arch" / "truth.zarr")
    dev = torch.device("cpu")
    cfg = _cfg("model=neural", f"model.checkpoint={ckpt}", "filter.particles=5",
               f"filter.init_climatology={tmp_path / 'arch'}")
    p = load_gridded(cfg, tmp_path / "data", dev, torch.float64)
    reader = p.climatology(cfg.filter.init_climatology)
    x = p.climatological_states(reader, torch.arange(5), seed=7)
    assert x.shape == (5, 2, *p.state_shape)
    asc = arch.sortby("latitude")
    states = np.stack([np.stack([asc[v].sel(level=lv).values for v, lv in p.layout.channels], axis=1)])[0]  # [T, C, H, W]
    z = (states - np.asarray(p.normalisation.mean)[:, None, None]) / np.asarray(p.normalisation.std)[:, None, None]
    times = []
    for i in range(5):  # each member is the pair (t-1, t) of the archive for some t
        t = [j for j in range(1, len(z)) if np.allclose(x[i, 1].numpy(), z[j], atol=1e-12)]
        assert len(t) == 1 and np.allclose(x[i, 0].numpy(), z[t[0] - 1], atol=1e-12)
        times.append(t[0])
    assert len(set(times)) > 1  # drawn, not one time for all
    np.testing.assert_array_equal(p.climatological_states(reader, torch.tensor([3, 4]), seed=7).numpy(), x[3:].numpy())
    assert not torch.equal(p.climatological_states(reader, torch.arange(5), seed=8), x)
    ens = _initial_ensemble(cfg, LocalComm(dev), 5, dev, torch.float64, p)
    np.testing.assert_array_equal(ens.x.numpy(), p.climatological_states(reader, torch.arange(5), cfg.run.seed).numpy())
    p.close()
    # a run starting from it is a run like any other
    result = assimilate(cfg, tmp_path / "data", tmp_path / "out")
    assert result.metrics["cycles"] == 4 and np.isfinite(result.metrics["rmse_analysis"])
    # refusals: missing variable, another grid
    (tmp_path / "bad").mkdir()
    write_store(era5_dataset(nt=4, variables=("temperature",)), tmp_path / "bad" / "truth.zarr")
    with pytest.raises(InputError, match="filter.init_climatology=.*geopotential"):
        assimilate(_cfg("model=neural", f"model.checkpoint={ckpt}", f"filter.init_climatology={tmp_path / 'bad'}"),
                   tmp_path / "data", tmp_path / "out-bad")
    assert not (tmp_path / "out-bad").exists()
    (tmp_path / "grid").mkdir()
    write_store(era5_dataset(nt=4, nlat=4, nlon=8), tmp_path / "grid" / "truth.zarr")
    with pytest.raises(InputError, match="4x8 grid that is not the data's 8x16: regrid"):
        assimilate(_cfg("model=neural", f"model.checkpoint={ckpt}", f"filter.init_climatology={tmp_path / 'grid'}"),
                   tmp_path / "data", tmp_path / "out-grid")
    assert not (tmp_path / "out-grid").exists()
    # a non-finite archive state: named (variable, level, time, point), before anything is written
    nan = era5_dataset(nt=6, seed=3)
    nan["temperature"][:, 1, 2, 3] = np.nan  # every time: whichever one a member draws
    (tmp_path / "nan").mkdir()
    write_store(nan, tmp_path / "nan" / "truth.zarr")
    with pytest.raises(InputError, match="a climatological initial state is not finite: temperature at 500 hPa at "
                       "time .* latitude .* longitude .* choose another run.seed or clean the store"):
        assimilate(_cfg("model=neural", f"model.checkpoint={ckpt}", f"filter.init_climatology={tmp_path / 'nan'}"),
                   tmp_path / "data", tmp_path / "out-nan")
    assert not (tmp_path / "out-nan").exists()
