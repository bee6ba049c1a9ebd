"""The analysis writer: template first, region writes, idempotent rewrites, consolidated at the end."""

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.data.analysis import AnalysisStore


def _like():
    return xr.Dataset({"x": (("component",), np.zeros(3))}, coords={"component": np.arange(3)})


def test_template_then_regions_idempotent(tmp_path):
    times = pd.date_range("2000-01-01", periods=4, freq="6h").values
    path = tmp_path / "analysis.zarr"
    store = AnalysisStore.create(path, _like(), times, {"config": {"k": 1}}, ["ess"])
    dims = {"x": ("component",), "ess": ()}
    for _ in range(2):  # rewriting a cycle is harmless
        store.write_cycle(2, {"x": np.array([1.0, 2.0, 3.0]), "ess": np.array(5.0)}, dims)
    ds = xr.open_zarr(path, consolidated=False)
    assert np.isnan(ds.x.values[[0, 1, 3]]).all() and ds.x.values[2].tolist() == [1, 2, 3]
    assert ds.attrs["complete"] == 0
    # resuming reopens without touching written cycles
    store = AnalysisStore.create(path, _like(), times, {}, ["ess"], resume=True)
    store.write_cycle(3, {"x": np.array([4.0, 4.0, 4.0]), "ess": np.array(1.0)}, dims)
    store.finalise()
    ds = xr.open_zarr(path)
    assert ds.attrs["complete"] == 1 and ds.ess.values[2] == 5.0 and ds.ess.values[3] == 1.0
    assert ds.x.encoding["chunks"][0] == 1  # one cycle per chunk: one writer per chunk


def _chunk_bytes(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            and "/c/" in p.as_posix()}


def test_rewriting_a_cycle_leaves_identical_bytes_and_cf_attributes(tmp_path):
    times = pd.date_range("2000-01-01", periods=3, freq="6h").values
    like = xr.Dataset({"temperature": (("level", "latitude"), np.zeros((2, 3), np.float32), {"units": "K"})},
                      coords={"level": ("level", [500.0, 850.0]), "latitude": ("latitude", [-30.0, 0.0, 30.0])})
    path = tmp_path / "a.zarr"
    store = AnalysisStore.create(path, like, times, {}, ["ess"])
    dims = {"temperature": ("level", "latitude"), "ess": ()}
    value = {"temperature": np.arange(6, dtype=np.float32).reshape(2, 3), "ess": np.array(2.0)}
    store.write_cycle(1, value, dims)
    first = _chunk_bytes(path)
    store.write_cycle(1, value, dims)
    assert _chunk_bytes(path) == first and first
    store.finalise()
    ds = xr.open_zarr(path)
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.temperature.attrs["units"] == "K"
    assert ds.latitude.attrs["units"] == "degrees_north" and ds.level.attrs["units"] == "hPa"
    assert ds.ess.attrs["long_name"].startswith("effective sample size")
    import zarr

    assert zarr.open_group(path, mode="r").metadata.zarr_format == 3


WRITER = r"""
import sys, numpy as np, pandas as pd
from pipeline.data.analysis import AnalysisStore
path, cycles = sys.argv[1], [int(c) for c in sys.argv[2].split(",")]
times = pd.date_range("2000-01-01", periods=8, freq="6h").values
store = AnalysisStore(path, times)
for k in cycles:
    store.write_cycle(k, {"x": np.full(3, float(k)), "ess": np.array(10.0 + k)}, {"x": ("component",), "ess": ()})
"""


def test_two_processes_writing_disjoint_regions_give_a_valid_store(tmp_path):
    import subprocess
    import sys

    times = pd.date_range("2000-01-01", periods=8, freq="6h").values
    path = tmp_path / "analysis.zarr"
    AnalysisStore.create(path, _like(), times, {}, ["ess"])
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), cycles])
             for cycles in ("0,2,4,6", "1,3,5,7")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    AnalysisStore(path, times).finalise()
    ds = xr.open_zarr(path)
    np.testing.assert_array_equal(ds.x.values, np.repeat(np.arange(8.0)[:, None], 3, axis=1))
    np.testing.assert_array_equal(ds.ess.values, 10.0 + np.arange(8))
    assert ds.attrs["complete"] == 1


MEMBER_WRITER = r"""
import sys, numpy as np, pandas as pd
from pipeline.data.analysis import AnalysisStore
path, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = pd.date_range("2000-01-01", periods=4, freq="6h").values
store = AnalysisStore(path, times)
for k in range(4):
    x = np.arange(lo, hi, dtype=float)[:, None] + 100.0 * k + np.zeros((1, 3))
    store.write_members(k, slice(lo, hi), {"x_members": x}, {"x_members": ("member", "component")})
"""


def test_ranks_writing_their_own_members_of_each_cycle(tmp_path):
    import subprocess
    import sys

    import pytest

    from pipeline.errors import DiffdaError

    times = pd.date_range("2000-01-01", periods=4, freq="6h").values
    like = xr.Dataset({"x": (("component",), np.zeros(3)), "x_members": (("member", "component"), np.zeros((8, 3)))},
                      coords={"component": np.arange(3), "member": np.arange(8)})
    path = tmp_path / "analysis.zarr"
    store = AnalysisStore.create(path, like, times, {}, [], member_chunk=4)
    procs = [subprocess.Popen([sys.executable, "-c", MEMBER_WRITER, str(path), lo, hi]) for lo, hi in (("0", "4"), ("4", "8"))]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ds = xr.open_zarr(path, consolidated=False)
    want = np.arange(8.0)[None, :, None] + 100.0 * np.arange(4)[:, None, None] + np.zeros((1, 1, 3))
    np.testing.assert_array_equal(ds.x_members.values, want)
    with pytest.raises(DiffdaError, match="do not fall on its member chunks of 4"):
        store.write_members(0, slice(2, 6), {"x_members": np.zeros((4, 3))}, {"x_members": ("member", "component")})


def test_sharded_store_for_a_single_writer_has_few_files(tmp_path):
    times = pd.date_range("2000-01-01", periods=16, freq="6h").values
    dims = {"x": ("component",), "ess": ()}
    paths = {}
    for shard in (None, 8):
        path = tmp_path / f"a{shard}.zarr"
        store = AnalysisStore.create(path, _like(), times, {}, ["ess"], shard_cycles=shard)
        for k in list(range(16)) + [3]:  # a rewrite too
            store.write_cycle(k, {"x": np.full(3, float(k)), "ess": np.array(float(k))}, dims)
        store.finalise()
        paths[shard] = path
        ds = xr.open_zarr(path)
        np.testing.assert_array_equal(ds.x.values[:, 0], np.arange(16.0))
    files = {k: sum(1 for f in _chunk_bytes(v) if f.split("/")[0] in ("x", "ess")) for k, v in paths.items()}
    assert files == {None: 32, 8: 4}  # 16 cycles x 2 arrays: one file per cycle, or per 8 cycles
