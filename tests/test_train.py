"""Training: determinism, bitwise resumption, the store entry point and the CLI (tiny, CPU)."""

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.cli import main as cli_main
from pipeline.errors import DiffdaError
from pipeline.models.network_checkpoint import GridLayout
from pipeline.models.normalisation import Normalisation
from pipeline.models.train import TRAIN_STATE, TrainOptions, train, train_from_store

H, W = 8, 16
OPTS = dict(batch_size=4, base=8, mults=(1, 2), emb=16, warmup=2, steps=6, checkpoint_every=3, lr=1e-3)


def waves(t=24, c=2, seed=0):
    """Eastward-moving waves ``[T, C, H, W]``: a predictable next state."""
    g = torch.Generator().manual_seed(seed)
    lon = torch.arange(W) * 2 * math.pi / W
    lat = torch.linspace(-1, 1, H)
    k = torch.arange(t, dtype=torch.float32)[:, None, None, None]
    amp = 1 + torch.rand(c, generator=g)[None, :, None, None]
    return amp * torch.sin(lon - 0.3 * k) * torch.cos(lat)[:, None] + 0.05 * torch.randn(t, c, H, W, generator=g)


def layout(c=2):
    return GridLayout(tuple(("temperature", 500.0 + 100 * i) for i in range(c)),
                      tuple(-90 + 180 * (i + 0.5) / H for i in range(H)), tuple(360 * j / W for j in range(W)))


def norm(z):
    return Normalisation.from_trajectory(z)


def test_resumed_training_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    z = waves()
    n = norm(z)
    opts = TrainOptions(**OPTS)
    full = train(z, layout(), n, tmp_path / "full", opts)
    first = train(z, layout(), n, tmp_path / "split", opts, stop_at=3)
    assert first.step == 3 and (tmp_path / "split" / TRAIN_STATE).exists()
    second = train(z, layout(), n, tmp_path / "split", opts)
    assert second.step == 6 and full.losses[3:] == second.losses
    a = torch.load(tmp_path / "full" / TRAIN_STATE, weights_only=False)
    b = torch.load(tmp_path / "split" / TRAIN_STATE, weights_only=False)
    for key in ("model", "ema"):
        for name, v in a[key].items():
            assert torch.equal(v, b[key][name]), f"{key}.{name} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == (tmp_path / "split" / "model.safetensors").read_bytes()


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    z = waves()
    n = norm(z)
    a = train(z, layout(), n, tmp_path / "a", TrainOptions(**{**OPTS, "steps": 2}))
    b = train(z, layout(), n, tmp_path / "b", TrainOptions(**{**OPTS, "steps": 2}))
    c = train(z, layout(), n, tmp_path / "c", TrainOptions(**{**OPTS, "steps": 2, "seed": 1}))
    assert a.losses == b.losses and a.losses != c.losses


def test_bad_options_are_refused():
    with pytest.raises(DiffdaError, match="unknown train option"):
        TrainOptions.from_dict({"stepz": 3})
    with pytest.raises(DiffdaError, match="history"):
        TrainOptions(history=0)


def _store(path, t=30):
    lat = -90 + 180 * (np.arange(H) + 0.5) / H
    lon = 360 * np.arange(W) / W
    z = waves(t, 4).numpy().reshape(t, 2, 2, H, W)
    ds = xr.Dataset(
        {"temperature": (("time", "level", "latitude", "longitude"), 250 + 10 * z[:, 0]),
         # stored (time, level, longitude, latitude): the reader must transpose by name
         "geopotential": (("time", "level", "longitude", "latitude"), (5e4 + 3e3 * z[:, 1]).transpose(0, 1, 3, 2))},
        coords={"time": np.arange(t) * np.timedelta64(6, "h") + np.datetime64("2000-01-01"),
                "level": [500, 850], "latitude": lat, "longitude": lon})
    ds.to_zarr(path / "truth.zarr")
    return path


def test_train_from_store_and_cli(tmp_path, capsys):
    data = _store(tmp_path / "data")
    summary = train_from_store(data, tmp_path / "ck", {**OPTS, "steps": 4, "val_fraction": 0.3})
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert sorted(map(tuple, meta["channels"])) == [("geopotential", 500.0), ("geopotential", 850.0), ("temperature", 500.0), ("temperature", 850.0)]
    assert meta["training"]["step"] == 4 and "skill" in meta["training"]
    assert summary["skill"]["rmse_persistence"] > 0 and summary["val_times"] == 9
    rc = cli_main(["train", "--data", str(data), "--out", str(tmp_path / "cli"),
                   "--set", "steps=2", "--set", "batch_size=2", "--set", "base=8", "--set", "mults=[1, 2]",
                   "--set", "emb=16", "--set", "history=1"])
    assert rc == 0 and "held-out forecast RMSE" in capsys.readouterr().out
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "cli"), "--set", "stepz=2"]) == 2


def test_data_parallel_training_under_mpiexec(tmp_path):
    """``mpiexec -n 2 diffda train``: the launcher opens a gloo group, DDP averages the gradients,
    training ends with identical parameters on both ranks (checked inside ``train``) and rank 0
    alone writes the checkpoint, with the world size recorded."""
    import subprocess
    import sys

    from tests.test_distributed_mpi import MPIEXEC, ROOT, clean_env

    if MPIEXEC is None:
        pytest.skip("no mpiexec")
    data = _store(tmp_path / "data")
    out = tmp_path / "ck"
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "pipeline.cli", "train", "--data", str(data),
                           "--out", str(out), "--set", "steps=3", "--set", "batch_size=2", "--set", "base=8",
                           "--set", "mults=[1, 2]", "--set", "emb=16", "--set", "history=1", "--set", "threads=1"],
                          env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("trained to step 3") == 1 and "on 2 data-parallel ranks" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["training"]["world_size"] == 2 and meta["training"]["step"] == 3
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
