"""Integration tests on a real SLURM cluster: ``slurm/local-cluster.sh up`` (one node, as root).

Skipped when no cluster answers, unless ``DIFFDA_REQUIRE_SLURM=1`` (``.ci/run``): then they fail.

* a 2-rank assimilation submitted through submitit (``diffda submit --profile localhost``, ranks
  started by ``srun --mpi=pmi2``) completes, and its analysis equals, bit for bit, the same run
  made locally with ``mpiexec -n 2``;
* a job interrupted mid-run, by ``scontrol requeue`` (SIGTERM) or by the signal submitit uses for
  preemption and time-outs (USR2), stops after a checkpointed cycle, is requeued, resumes, and
  its analysis is bitwise identical to an uninterrupted run; every cycle appears exactly once in
  the job's log;
* a 3-window campaign runs as one job array and ``diffda status`` reports it done;
* a window that fails is reported failed with its log path, and ``--resume`` reruns only it;
* a chained campaign (dependent jobs) reproduces the single long run bit for bit;
* a campaign of smoothing windows (``--kind smooth``) cancelled (``scancel``) while a window's job
  runs, then resumed: only the unfinished windows are resubmitted, a finished window is never
  written again, and every window equals the same campaign run locally without interruption.
* ``diffda prepare --profile localhost`` runs its Dask worker as a job of the cluster, every Dask
  socket listens on 127.0.0.1, and its regridded store, statistics and observations equal those
  of the local Dask run; the SLURM daemons listen on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr

from pipeline.data.era5 import Statistics
from tests.era5_stores import era5_dataset, write_store
from tests.test_distributed_mpi import MPIEXEC, ROOT, clean_env

pytestmark = pytest.mark.slurm
RUN = ["--set", "filter.particles=16", "--set", "sampler.steps=8", "--set", "run.cycles=20"]
SLOW = ["--set", "filter.particles=16", "--set", "sampler.steps=16", "--set", "run.cycles=30"]


def cluster_state() -> str | None:
    """Why the cluster is not usable, or None when it is."""
    if shutil.which("sinfo") is None:
        return "no SLURM client commands (sinfo); run `slurm/local-cluster.sh up` as root"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    states = p.stdout.split()
    if p.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no usable SLURM node (sinfo: {p.stdout.strip() or p.stderr.strip()}); run `slurm/local-cluster.sh up`"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = cluster_state()
    if why is not None:
        if os.environ.get("DIFFDA_REQUIRE_SLURM") == "1":
            pytest.fail(f"DIFFDA_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)


def diffda(*args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=clean_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"diffda {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def local_run(n: int, data: Path, out: Path, *extra: str) -> None:
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "jobs.cli", "run", "--data", str(data),
                           "--out", str(out), "--quiet", *extra], env=clean_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def assert_same_analysis(a: Path, b: Path) -> None:
    da, db = xr.open_zarr(a / "analysis.zarr").load(), xr.open_zarr(b / "analysis.zarr").load()
    assert int(da.attrs.get("complete", 0)) == 1
    for var in ("x", "x_spread", "ess", "resampled", "rmse_analysis"):
        assert np.array_equal(da[var].values, db[var].values), var


def job_field(job_id: str, name: str) -> str:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    m = re.search(rf"\b{name}=(\S+)", text)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm-l96") / "data"
    diffda("make-data", "lorenz96", "--out", str(d), "--set", "cycles=30")
    return d


@pytest.fixture(scope="module")
def one_rank_profile(tmp_path_factory):
    """The localhost profile with one rank per job, so two array tasks fit the 2-CPU node at once."""
    text = (ROOT / "slurm" / "profiles" / "localhost.yaml").read_text()
    path = tmp_path_factory.mktemp("profiles") / "localhost1.yaml"
    path.write_text(re.sub(r"(?m)^tasks_per_node:.*$", "tasks_per_node: 1", text))
    return path


def test_submit_two_ranks_equals_local_run(data, tmp_path):
    out = tmp_path / "slurm-run"
    proc = diffda("submit", "--profile", "localhost", "--data", str(data), "--out", str(out), *RUN, "--wait")
    assert re.search(r"submitted job \d+", proc.stdout)
    assert "completed" in proc.stdout
    sub = json.loads((out / "submission.json").read_text())
    logs = (out / "slurm" / f"{sub['job_id']}_0_log.err").read_text() + (out / "slurm" / f"{sub['job_id']}_1_log.err").read_text()
    assert logs.count("launcher mpi") == 2  # srun --mpi=pmi2 started MPI ranks
    local = tmp_path / "local-run"
    local_run(2, data, local, *RUN)
    assert_same_analysis(out, local)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    local_run(2, data, out, *SLOW)
    return out


@pytest.mark.parametrize("how", ["scontrol-requeue", "usr2"])
def test_requeued_job_resumes_bitwise(data, uninterrupted, tmp_path, how):
    out = tmp_path / "run"
    diffda("submit", "--profile", "localhost", "--data", str(data), "--out", str(out), *SLOW)
    job = json.loads((out / "submission.json").read_text())["job_id"]
    latest = out / "checkpoint" / "latest.json"
    deadline = time.monotonic() + 180
    while not (latest.exists() and json.loads(latest.read_text())["cycle"] >= 3):
        assert time.monotonic() < deadline, "the job did not reach cycle 3"
        assert job_field(job, "JobState") in ("PENDING", "RUNNING", "CONFIGURING"), job_field(job, "JobState")
        time.sleep(0.2)
    if how == "scontrol-requeue":  # SIGTERM to the tasks; SLURM requeues the job itself
        subprocess.run(["scontrol", "requeue", job], check=True)
    else:  # what SLURM sends before the time limit (sbatch --signal=USR2@...); the job requeues itself
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
    deadline = time.monotonic() + 200
    held_since = None
    while True:
        state, reason = job_field(job, "JobState"), job_field(job, "Reason")
        if state == "PENDING" and reason == "BeginTime":
            # SLURM holds a requeued job for ~2 min; release it, but not within the second of the
            # requeue (slurmd refuses a job credential issued in the second it revoked the old one)
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since > 3:
                subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=False)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        assert time.monotonic() < deadline, f"job {job} still {state} ({reason})"
        time.sleep(0.5)
    assert state == "COMPLETED"
    assert job_field(job, "Restarts") == "1"
    log = (out / "slurm" / f"{job}_0_log.err").read_text()
    signal = "SIGTERM" if how == "scontrol-requeue" else "SIGUSR2"
    m = re.search(rf"stopped after cycle (\d+) \({signal}\)", log)
    assert m, log[-3000:]
    assert 3 <= int(m.group(1)) < 30
    cycles = [int(c) for c in re.findall(r"^cycle (\d+)/30", log, re.M)]
    assert cycles == list(range(1, 31))  # none lost, none run (or written) twice
    note = json.loads((out / "job.json").read_text())
    assert note["restarts"] == 1 and note["start_cycle"] == int(m.group(1))
    assert_same_analysis(out, uninterrupted)


def campaign_args(data: Path, out: Path, profile: Path) -> list[str]:
    return ["campaign", "--profile", str(profile), "--data", str(data), "--out", str(out),
            "--start", "2000-01-01T06", "--end", "2000-01-06T06", "--window", "40h", "--spinup", "12h",
            "--max-concurrent", "2", "--set", "filter.particles=16", "--set", "sampler.steps=8"]


def test_campaign_runs_as_job_array(data, tmp_path, one_rank_profile):
    out = tmp_path / "campaign"
    proc = diffda(*campaign_args(data, out, one_rank_profile), "--wait")
    manifest = json.loads((out / "campaign.json").read_text())
    ids = [w["submissions"][0]["job_id"] for w in manifest["windows"]]
    assert len(ids) == 3 and len({i.split("_")[0] for i in ids}) == 1  # one array
    assert [i.split("_")[1] for i in ids] == ["0", "1", "2"]
    status = diffda("status", str(out))
    assert status.stdout.count(" done ") == 3, status.stdout
    assert "3 done" in status.stdout, status.stdout
    starts = [w["run_start"] for w in manifest["windows"]]
    assert starts == [0, 5, 12] and [w["spinup"] for w in manifest["windows"]] == [0, 2, 2]
    for w in manifest["windows"]:
        ds = xr.open_zarr(Path(w["out"]) / "analysis.zarr")
        assert ds.sizes["time"] == w["cycles"] and int(ds.attrs["complete"]) == 1
    assert "w000:done  w001:done  w002:done" in proc.stdout


def test_failed_window_reported_and_resumed(data, tmp_path, one_rank_profile):
    out = tmp_path / "campaign"
    bogus = out / "w001" / "checkpoint"  # a stale run of another configuration: window 1 must fail
    bogus.mkdir(parents=True)
    (bogus / "latest.json").write_text(json.dumps({"cycle": 1, "ranks": 1, "fingerprint": "someone-else"}))
    proc = diffda(*campaign_args(data, out, one_rank_profile), "--wait", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status = diffda("status", str(out), check=False)
    assert status.returncode == 1
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("w001"))
    assert " failed " in line and "another configuration" in line, status.stdout
    log = Path(line.split("log: ")[1].strip())
    assert log.exists() and "another configuration" in log.read_text()
    assert sum(" done " in ln for ln in status.stdout.splitlines()) == 2

    shutil.rmtree(bogus)
    proc = diffda("campaign", "--resume", str(out), "--wait")
    assert "resubmitted 1 window(s) (w001)" in proc.stdout
    manifest = json.loads((out / "campaign.json").read_text())
    assert [len(w["submissions"]) for w in manifest["windows"]] == [1, 2, 1]
    status = diffda("status", str(out))
    assert "3 done" in status.stdout
    again = diffda("campaign", "--resume", str(out))
    assert "nothing to resubmit" in again.stdout


def test_chained_campaign_equals_one_long_run(data, tmp_path, one_rank_profile):
    """Chained windows are dependent jobs, each starting from the previous window's particles;
    randomness is keyed by the data's cycle, so together they are the single 20-cycle run."""
    out = tmp_path / "chained"
    diffda("campaign", "--profile", str(one_rank_profile), "--mode", "chained", "--data", str(data),
           "--out", str(out), "--start", "2000-01-01T06", "--end", "2000-01-06T06", "--window", "40h",
           "--set", "filter.particles=16", "--set", "sampler.steps=8", "--wait")
    manifest = json.loads((out / "campaign.json").read_text())
    ids = [w["submissions"][0]["job_id"] for w in manifest["windows"]]
    script = (out / "slurm" / f"{ids[2]}_submission.sh").read_text()
    assert f"--dependency=afterok:{ids[1]}" in script
    local = tmp_path / "long"
    local_run(1, data, local, *RUN)
    long = xr.open_zarr(local / "analysis.zarr")
    parts = [xr.open_zarr(Path(w["out"]) / "analysis.zarr") for w in manifest["windows"]]
    for var in ("x", "x_spread", "ess"):
        assert np.array_equal(np.concatenate([p[var].values for p in parts]), long[var].values), var


SMOOTH = ["--set", "smoother.samples=32", "--set", "sampler.steps=16", "--set", "smoother.window_half_width=2"]


def test_smoothing_campaign_cancelled_and_resumed_writes_each_window_once(tmp_path, one_rank_profile):
    from jobs import campaign

    data = tmp_path / "linear"
    diffda("make-data", "linear", "--out", str(data), "--set", "cycles=24")
    preset = ROOT / "pipeline" / "presets" / "linear-smooth.yaml"
    period = ["--start", "2000-01-01T06", "--end", "2000-01-05T18", "--window", "36h"]
    out = tmp_path / "smooth"
    diffda("campaign", "--kind", "smooth", str(preset), "--profile", str(one_rank_profile), "--data", str(data),
           "--out", str(out), *period, "--max-concurrent", "1", *SMOOTH)
    manifest = json.loads((out / "campaign.json").read_text())
    outs = [Path(w["out"]) for w in manifest["windows"]]
    array = manifest["windows"][0]["submissions"][0]["job_id"].split("_")[0]
    deadline = time.monotonic() + 300
    while not (outs[1] / "job.json").exists():  # the second window's job has started
        assert time.monotonic() < deadline, diffda("status", str(out), check=False).stdout
        time.sleep(0.1)
    subprocess.run(["scancel", array], check=True)
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the cancelled array is still queued"
        time.sleep(0.5)
    finished = {o: ((o / "metrics.json").stat().st_mtime_ns, (o / "analysis.zarr").stat().st_ino)
                for o in outs if (o / "metrics.json").exists()}
    assert outs[0] in finished and outs[2] not in finished

    proc = diffda("campaign", "--resume", str(out), "--wait", timeout=400)
    todo = [i for i, o in enumerate(outs) if o not in finished]
    assert f"resubmitted {len(todo)} window(s) ({', '.join(f'w{i:03d}' for i in todo)})" in proc.stdout
    assert "w000:done  w001:done  w002:done" in proc.stdout
    for o, stamp in finished.items():  # never written again
        assert ((o / "metrics.json").stat().st_mtime_ns, (o / "analysis.zarr").stat().st_ino) == stamp

    ref, _ = campaign.create(preset, [o for o in SMOOTH if o != "--set"], data, tmp_path / "ref", "local",
                             *period[1::2], "independent", None, 1, kind="smooth")
    campaign.WindowSequence([campaign.window_job(ref, w) for w in ref["windows"]]).work(lambda: False)
    for o, w in zip(outs, ref["windows"]):
        got, want = (xr.open_zarr(Path(p) / "analysis.zarr").load() for p in (o, w["out"]))
        for var in ("x", "x_spread"):
            np.testing.assert_allclose(got[var].values, want[var].values, rtol=0, atol=1e-12)


def listening(procs: list[psutil.Process]) -> set[tuple[str, int]]:
    """The TCP addresses ``procs`` listen on (those that still run)."""
    out = set()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    return out


def tree(p: psutil.Process) -> list[psutil.Process]:
    return [p, *p.children(recursive=True)]


def test_prepare_runs_dask_workers_as_slurm_jobs_on_loopback(tmp_path):
    """The worker runs inside a job of the cluster; scheduler, nanny, worker and dashboards listen
    on 127.0.0.1 alone; the regridded store, statistics and observations equal the local run's."""
    write_store(era5_dataset(nt=5, nlat=32, nlon=64), tmp_path / "ref.zarr")
    args = ["prepare", "--store", str(tmp_path / "ref.zarr"), "--grid", "32x16", "--observe", "--obs", "thinning=2"]
    out = tmp_path / "slurm"
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args, "--out", str(out), "--profile", "localhost"],
                            env=clean_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # while the worker is connected: who listens where
        deadline = time.monotonic() + 120
        while not (logs := list((out / "slurm").glob("dask-worker-*.err"))) or "Registered to:" not in logs[0].read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "no Dask worker job registered"
            time.sleep(0.2)
        scheduler = re.search(r"Registered to:\s+(tcp://\S+)", logs[0].read_text()).group(1)
        nanny = next(p for p in psutil.process_iter(["cmdline"])
                     if "distributed.cli.dask_worker" in (p.info["cmdline"] or []) and scheduler in p.info["cmdline"])
        job_env = nanny.environ().get("SLURM_JOB_ID")
        sockets = listening(tree(psutil.Process(proc.pid)) + tree(nanny))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    job = re.fullmatch(r"dask-worker-(\d+)\.err", logs[0].name).group(1)
    assert job_env == job and job_field(job, "JobName") == "dask-worker"  # the worker ran inside that job
    assert f"dask: scheduler at {scheduler}" in stderr and scheduler.startswith("tcp://127.0.0.1:")
    assert ("127.0.0.1", int(scheduler.rsplit(":", 1)[1])) in sockets and len(sockets) >= 4  # + dashboards, nanny, worker
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
    assert json.loads(stdout)["times"] == 5

    local = tmp_path / "local"
    diffda(*args, "--out", str(local))
    for name in ("truth.zarr", "observations.zarr"):
        a, b = xr.open_zarr(out / name).load(), xr.open_zarr(local / name).load()
        assert set(a.data_vars) == set(b.data_vars) and a.sizes == b.sizes
        for var in a.data_vars:
            np.testing.assert_allclose(a[var].values, b[var].values, rtol=1e-6, equal_nan=True, err_msg=f"{name} {var}")
    sa, sb = Statistics.load(out / "statistics.json"), Statistics.load(local / "statistics.json")
    assert sa.levels == sb.levels
    for field in ("mean", "std", "residual_std"):
        for var, values in getattr(sa, field).items():
            np.testing.assert_allclose(values, getattr(sb, field)[var], rtol=1e-6, err_msg=f"{field} {var}")


def host_is_loopback() -> bool:
    try:
        return socket.gethostbyname(socket.gethostname()).startswith("127.")
    except OSError:
        return False


@pytest.mark.skipif(not host_is_loopback(), reason="SLURM binds to the host name's address, not loopback here")
def test_slurm_daemons_listen_on_loopback():
    daemons = [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("slurmctld", "slurmd")]
    assert len(daemons) == 2
    sockets = listening(daemons)
    assert sockets and {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
