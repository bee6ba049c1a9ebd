"""Particle checkpoints verify themselves: a truncated or missing latest checkpoint is skipped
(named), the run resumes from the previous one and its analysis equals an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.commands.make_data import make_data
from pipeline.config import load_config
from pipeline.errors import DiffdaError
from pipeline.run import assimilate

SETS = ["data.preset=linear", "filter.particles=8", "sampler.steps=4", "guidance=dps", "filter.weights=seed"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt") / "data"
    make_data("linear", d, {"cycles": 30, "dim": 8})
    return d


def analysis(out: Path) -> xr.Dataset:
    return xr.open_zarr(out / "analysis.zarr").load()


def same(a: Path, b: Path) -> None:
    da, db = analysis(a), analysis(b)
    for var in ("x", "x_spread", "ess", "resampled", "rmse_analysis"):
        assert np.array_equal(da[var].values, db[var].values), var


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "full"
    assimilate(load_config(None, SETS), data, out)
    return out


def interrupted(data: Path, out: Path, at: int = 20) -> Path:
    cfg = load_config(None, SETS)
    assimilate(cfg, data, out, stop_after=at)
    ckpt = out / "checkpoint"
    assert sorted(p.name for p in ckpt.glob("cycle-*")) == [f"cycle-{at - 1:06d}", f"cycle-{at:06d}"]  # the last two
    return ckpt / f"cycle-{at:06d}" / "rank-0000.pt"


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_latest_checkpoint_is_skipped_and_the_run_replays_bit_for_bit(data, uninterrupted, tmp_path, damage):
    out = tmp_path / "run"
    latest = interrupted(data, out)
    if damage == "truncate":
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    else:
        latest.unlink()
    lines: list[str] = []
    result = assimilate(load_config(None, SETS), data, out, log=lines.append)
    assert result.resumed_from == 19
    assert len(lines) == 1 and str(latest) in lines[0] and ("corrupt" in lines[0] or "missing" in lines[0])
    same(out, uninterrupted)


def test_no_usable_checkpoint_names_the_files_and_fresh(data, tmp_path):
    out = tmp_path / "run"
    latest = interrupted(data, out)
    previous = out / "checkpoint" / "cycle-000019" / "rank-0000.pt"
    latest.write_bytes(b"")
    previous.unlink()
    with pytest.raises(DiffdaError) as err:
        assimilate(load_config(None, SETS), data, out)
    msg = str(err.value)
    assert str(latest) in msg and str(previous) in msg and "--fresh" in msg
