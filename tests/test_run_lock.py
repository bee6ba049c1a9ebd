"""The output-directory lock (:mod:`pipeline.run_lock`): one writer per ``--out``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from pipeline import run_lock
from pipeline.errors import DiffdaError
from tests.test_distributed_mpi import ROOT, clean_env


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    (tmp_path / run_lock.NAME).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": _dead_pid(), "started": time.time() - 60, "command": "old"}))
    lock = run_lock.acquire(tmp_path, command="new")
    assert lock.taken_over is not None and "stale" in lock.taken_over and "old" in lock.taken_over
    assert json.loads((tmp_path / run_lock.NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / run_lock.NAME).exists()


@pytest.mark.parametrize("host", ["same", "other"])
def test_live_or_remote_holder_refused(tmp_path, host):
    holder = {"host": socket.gethostname() if host == "same" else "node-elsewhere", "pid": os.getppid() if host == "same" else 1,
              "started": time.time(), "command": "diffda run"}  # after its process started: not a reused pid
    (tmp_path / run_lock.NAME).write_text(json.dumps(holder))
    with pytest.raises(DiffdaError) as err:
        run_lock.acquire(tmp_path)
    msg = str(err.value)
    assert f"pid {holder['pid']}" in msg and holder["host"] in msg and str(tmp_path / run_lock.NAME) in msg
    assert json.loads((tmp_path / run_lock.NAME).read_text()) == holder  # untouched


def test_released_on_exception_and_made_directory_removed(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with run_lock.acquire(out):
            assert (out / run_lock.NAME).exists()
            raise RuntimeError("boom")
    assert not out.exists()  # the lock made it, nothing else was written: nothing left behind
    with run_lock.acquire(out) as again:  # free again
        assert again.taken_over is None
        (out / "kept").write_text("x")
    assert (out / "kept").exists() and not (out / run_lock.NAME).exists()


def _run(data, out):
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--preset", "lorenz63", "--data", str(data), "--out", str(out),
           "--set", "filter.particles=8", "--set", "sampler.steps=8", "--quiet"]
    return subprocess.Popen(cmd, env=clean_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_on_one_out(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "make-data", "lorenz63", "--out", str(data),
                    "--set", "cycles=16"], check=True, env=clean_env(), cwd=ROOT, capture_output=True)
    single = _run(data, tmp_path / "single")
    single.communicate(timeout=300)
    assert single.returncode == 0
    start = time.monotonic()
    a, b = _run(data, tmp_path / "out"), _run(data, tmp_path / "out")
    procs, ended = {a: None, b: None}, []
    while len(ended) < 2:
        for p in procs:
            if p not in ended and p.poll() is not None:
                procs[p] = time.monotonic() - start
                ended.append(p)
        time.sleep(0.05)
    first, second = ended
    _, err = first.communicate()
    assert first.returncode == 2, err  # the loser ends first, while the winner is still running
    assert "in use by another run" in err and f"pid {second.pid}" in err and run_lock.NAME in err
    assert procs[first] < procs[second]
    assert second.communicate()[0] and second.returncode == 0
    got, want = xr.open_zarr(tmp_path / "out" / "analysis.zarr"), xr.open_zarr(tmp_path / "single" / "analysis.zarr")
    for name in ("x", "x_spread", "ess", "rmse_analysis", "resampled"):
        np.testing.assert_array_equal(got[name].values, want[name].values)
    assert not (tmp_path / "out" / run_lock.NAME).exists()
