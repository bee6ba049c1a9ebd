"""The SLURM layer without a cluster: profiles, pre-submission checks, campaign windows, the stop flag."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from jobs import slurmctl
from jobs.campaign import CampaignError, plan_windows
from jobs.profiles import ROOT, Profile, ProfileError, load_profile, parse_time_minutes
from jobs.submission import RunSpec, SubmitError, check, make_executor
from pipeline.config import load_config
from pipeline.stop import StopFlag


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["local", "localhost", "example-gpu"])
def test_shipped_profiles_validate(name):
    prof = load_profile(name)
    assert prof.name == name
    if prof.gpus_per_node:
        assert prof.tasks_per_node == prof.gpus_per_node


def test_unknown_profile_key_is_named_with_the_fix(tmp_path):
    with pytest.raises(ProfileError) as err:
        load_profile(write(tmp_path, "partition: gpu\ngpus_per_nodes: 4\n"))
    assert "unknown key 'gpus_per_nodes'" in str(err.value) and "did you mean 'gpus_per_node'" in str(err.value)


@pytest.mark.parametrize("text, words", [
    ("time: 1h\n", "not a SLURM time"),
    ("mem: lots\n", "not a SLURM memory size"),
    ("mem: 4G\nmem_per_cpu: 1G\n", "not both"),
    ("srun_args: [mpi=pmi2]\n", "each srun argument is one option"),
    ("sbatch: {reservaton: r1}\n", "did you mean 'reservation'"),
    ("sbatch: {array: 0-3}\n", "set by diffda"),
])
def test_profile_values_sbatch_would_reject(tmp_path, text, words):
    with pytest.raises(ProfileError, match=words):
        load_profile(write(tmp_path, text))


def test_profile_lookup_names_known_profiles():
    with pytest.raises(ProfileError, match="did you mean 'localhost'"):
        load_profile("localhots")


@pytest.mark.parametrize("text, minutes", [(90, 90), ("30", 30), ("10:30", 11), ("01:00:00", 60),
                                           ("2-00", 2880), ("1-12:00:00", 2160)])
def test_time_formats(text, minutes):
    assert parse_time_minutes(text) == minutes


def spec(tmp_path: Path, *overrides: str) -> RunSpec:
    data = tmp_path / "data"
    for store in ("truth.zarr", "observations.zarr"):
        (data / store).mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, list(overrides))
    return RunSpec(None, list(overrides), cfg, data, tmp_path / "out", cycles=None)


def test_checks_gpus_particles_time_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(slurmctl, "partitions", lambda: {"gpu": {"PartitionName": "gpu", "MaxTime": "01:00:00",
                                                                 "MaxNodes": "UNLIMITED"}})
    prof = Profile(name="p", partition="gpu", time="02:00:00", nodes=2, gpus_per_node=4, tasks_per_node=2)
    s = spec(tmp_path, "filter.particles=3", "model.checkpoint=/no/such/checkpoint")
    with pytest.raises(SubmitError) as err:
        check(prof, s)
    msg = str(err.value)
    assert "tasks_per_node=2 but gpus_per_node=4" in msg and "set tasks_per_node: 4" in msg
    assert "filter.particles=3 is fewer than the 4 ranks" in msg
    assert "exceeds partition gpu's MaxTime" in msg
    assert "model.checkpoint=/no/such/checkpoint does not exist" in msg


def test_time_limit_vs_estimate(tmp_path, monkeypatch):
    monkeypatch.setattr(slurmctl, "partitions", lambda: {"debug": {"PartitionName": "debug", "Default": "YES",
                                                                   "MaxTime": "UNLIMITED"}})
    prof = Profile(name="p", time="00:01:30", signal_delay_s=60)
    with pytest.raises(SubmitError, match="no cycle could finish; raise 'time'"):
        check(prof, spec(tmp_path), cycle_seconds=5.0)
    prof = Profile(name="p", time="00:10:00", signal_delay_s=60, max_timeouts=1)
    s = spec(tmp_path, "run.cycles=1000")
    (s.data_dir / "observations.zarr").rmdir()  # unknown length: data.params / run.cycles decide
    (s.data_dir / "truth.zarr").rmdir()
    with pytest.raises(SubmitError, match="raise 'time' or 'max_timeouts'"):
        check(prof, s, cycle_seconds=5.0)
    prof = Profile(name="p", time="00:10:00", signal_delay_s=60, max_timeouts=100)
    warnings = check(prof, spec(tmp_path, "run.cycles=1000"), cycle_seconds=5.0)
    assert any("requeue about" in w for w in warnings)


def test_node_local_paths_warn_for_cluster_profiles(tmp_path, monkeypatch):
    monkeypatch.setattr(slurmctl, "partitions", lambda: None)
    s = spec(tmp_path)
    s.out_dir = Path("/tmp/diffda-test-out")
    warnings = check(Profile(name="p", time="01:00:00"), s, cycle_seconds=0.1)
    assert any("--out /tmp/diffda-test-out is on a node-local file system" in w for w in warnings)
    assert not any("node-local" in w for w in check(Profile(name="p", executor="local"), s, cycle_seconds=0.1))


def test_executor_parameters(tmp_path):
    import submitit

    prof = load_profile("example-gpu")
    ex = make_executor(prof, tmp_path / "slurm", job_name="t")
    assert isinstance(ex, submitit.SlurmExecutor)
    assert ex.parameters["ntasks_per_node"] == 4 and ex.parameters["gpus_per_node"] == 4
    assert "--mpi=pmi2" in ex.parameters["srun_args"] and "--kill-on-bad-exit=1" in ex.parameters["srun_args"]
    assert "module load cuda/12.4" in ex.parameters["setup"]
    assert ex.parameters["additional_parameters"]["requeue"] is True
    assert ex.parameters["signal_delay_s"] == 180


def test_windows_independent_and_chained(tmp_path):
    times = np.arange(np.datetime64("2000-01-01T06"), np.datetime64("2000-01-08T18"), np.timedelta64(6, "h"))
    ws = plan_windows(times, "2000-01-01T06", "2000-01-06T06", "40h", "independent", "12h", tmp_path)
    assert [(w.run_start, w.cycles, w.spinup) for w in ws] == [(0, 7, 0), (5, 9, 2), (12, 8, 2)]
    assert ws[1].overrides() == ["run.start=5", "run.cycles=9", "filter.spinup=2"]
    cs = plan_windows(times, "2000-01-01T06", "2000-01-06T06", "40h", "chained", None, tmp_path)
    assert [(w.run_start, w.cycles) for w in cs] == [(0, 7), (7, 7), (14, 6)]
    assert cs[0].init is None and cs[2].init == cs[1].out
    with pytest.raises(CampaignError, match="not inside the data"):
        plan_windows(times, "1999-01-01", "2000-01-02", "1D", "independent", None, tmp_path)
    with pytest.raises(CampaignError, match="not a length"):
        plan_windows(times, "2000-01-01T06", "2000-01-02", "forever", "independent", None, tmp_path)


def test_array_task_ids():
    assert slurmctl.expand_task_ids("1-4%2") == [1, 2, 3, 4]
    assert slurmctl.expand_task_ids("0,3,5-9:2") == [0, 3, 5, 7, 9]


def test_stop_flag_on_signal():
    stop = StopFlag().install(("SIGUSR2",))
    try:
        assert not stop()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop() and stop.signal == "SIGUSR2"
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR2) is not stop._handle


def test_assimilate_stops_between_cycles_and_resumes_bitwise(tmp_path):
    """``should_stop`` ends a run after a checkpointed cycle; the rerun equals an uninterrupted run."""
    import xarray as xr

    from pipeline.commands.make_data import make_data
    from pipeline.run import assimilate

    data = tmp_path / "data"
    make_data("lorenz96", data, {"cycles": 8, "dim": 8})
    cfg = load_config(None, ["filter.particles=6", "sampler.steps=4"])
    calls = []
    res = assimilate(cfg, data, tmp_path / "a", should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert res.stopped and res.last_cycle == 3
    res = assimilate(cfg, data, tmp_path / "a")
    assert not res.stopped and res.resumed_from == 3
    assimilate(cfg, data, tmp_path / "b")
    a, b = xr.open_zarr(tmp_path / "a" / "analysis.zarr"), xr.open_zarr(tmp_path / "b" / "analysis.zarr")
    assert np.array_equal(a.x.values, b.x.values)


def test_windows_chained_equal_one_long_run(tmp_path):
    """``run.start`` selects a window; ``run.init`` starts from an earlier run's final particles;
    randomness is keyed by the data's cycle, so chained windows reproduce one long run bit for bit."""
    import xarray as xr

    from pipeline.commands.make_data import make_data
    from pipeline.run import assimilate

    data = tmp_path / "data"
    make_data("lorenz96", data, {"cycles": 10, "dim": 8})
    base = ["filter.particles=6", "sampler.steps=4", "filter.resample_threshold=0.9"]
    assimilate(load_config(None, base + ["run.cycles=7"]), data, tmp_path / "long")
    assimilate(load_config(None, base + ["run.cycles=4"]), data, tmp_path / "w0")
    cfg = load_config(None, base + ["run.start=4", "run.cycles=3", f"run.init={tmp_path / 'w0'}"])
    assimilate(cfg, data, tmp_path / "w1")
    long = xr.open_zarr(tmp_path / "long" / "analysis.zarr")
    w0, w1 = (xr.open_zarr(tmp_path / w / "analysis.zarr") for w in ("w0", "w1"))
    obs = xr.open_zarr(data / "observations.zarr")
    assert np.array_equal(w1.time.values, obs.time.values[4:7])
    assert long.resampled.values.sum() > 0
    for var in ("x", "x_spread", "ess"):
        assert np.array_equal(np.concatenate([w0[var].values, w1[var].values]), long[var].values), var
    with pytest.raises(Exception, match="no checkpoint there"):
        assimilate(load_config(None, base + ["run.start=4", f"run.init={tmp_path / 'nothing'}"]), data, tmp_path / "w2")


def test_profiles_dir_is_in_the_repository():
    assert (ROOT / "slurm" / "profiles" / "localhost.yaml").exists()
