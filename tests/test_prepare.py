"""``diffda prepare``: statistics, regridding and observations on a Dask cluster; site profiles."""

import json

import numpy as np
import psutil
import pytest

from era5_stores import era5_dataset, write_store
from pipeline.cli import main
from pipeline.data.era5 import Era5Reader, Statistics, compute_statistics, open_store, select, to_grid
from pipeline.data.prepare import dask_client, parse_grid


def test_prepare_on_a_local_cluster_regrids_and_observes(tmp_path, capsys):
    ref = era5_dataset(nt=5, nlat=16, nlon=32, ascending=False)
    write_store(ref, tmp_path / "ref.zarr")
    rc = main(["prepare", "--store", str(tmp_path / "ref.zarr"), "--out", str(tmp_path / "out"), "--grid", "16x8",
               "--levels", "500,850", "--observe", "--obs", "thinning=1", "--obs", "stations=20"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["times"] == 5
    truth = open_store(tmp_path / "out" / "truth.zarr")
    lat, lon = parse_grid("16x8")
    np.testing.assert_allclose(truth.latitude.values, lat)
    np.testing.assert_allclose(truth.longitude.values, lon)
    assert list(truth.level.values) == [500.0, 850.0]
    # WeatherBench2 grids all start at longitude 0, so 32x16 -> 16x8 is not a block mean: bilinear
    want = to_grid(ref, lat, lon).temperature.sel(level=500).values
    np.testing.assert_allclose(truth.temperature.sel(level=500).values, want, rtol=1e-6)
    stats = Statistics.load(tmp_path / "out" / "statistics.json")
    direct = compute_statistics(select(truth))
    np.testing.assert_allclose(stats.mean["temperature"], direct.mean["temperature"], rtol=1e-12)
    obs = open_store(tmp_path / "out" / "observations.zarr")
    assert obs.sizes["time"] == 4 and np.isfinite(obs.temperature.values[0, 0]).sum() == 20
    assert Era5Reader(tmp_path / "out" / "truth.zarr").layout.shape == (6, 8, 16)


def test_local_dask_cluster_listens_on_loopback_only():
    def listening() -> set[tuple[str, int]]:
        return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("inet")
                if c.status == psutil.CONN_LISTEN}

    before = listening()
    with dask_client(workers=1, threads=1) as client:
        opened = listening() - before
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert len(opened) >= 3 and {ip for ip, _ in opened} == {"127.0.0.1"}, opened  # scheduler, dashboards


def test_missing_variable_fails_with_its_name(tmp_path, capsys):
    write_store(era5_dataset(nt=3), tmp_path / "truth.zarr")
    rc = main(["prepare", "--data", str(tmp_path), "--variables", "temperature,specific_humidity"])
    assert rc == 2 and "'specific_humidity'" in capsys.readouterr().err


PROFILE = """
partition: compute
account: proj42
qos: normal
time: "02:00:00"
cpus_per_task: 8
mem: 32G
setup:
  - module load python/3.11
  - source /opt/diffda/.venv/bin/activate
gpus_per_node: 4
tasks_per_node: 4
dask:
  interface: lo
"""


def test_slurm_profile_becomes_slurmcluster_kwargs(tmp_path):
    from jobs.profiles import dask_cluster_kwargs, load_profile

    path = tmp_path / "site.yaml"
    path.write_text(PROFILE)
    kw = dask_cluster_kwargs(load_profile(path))
    assert kw["queue"] == "compute" and kw["account"] == "proj42" and kw["walltime"] == "02:00:00"
    assert kw["cores"] == 8 and kw["memory"] == "32GB"
    assert kw["job_extra_directives"] == ["--qos=normal", "--gpus-per-node=4"]
    assert kw["job_script_prologue"][0] == "module load python/3.11" and kw["interface"] == "lo"
    from dask_jobqueue import SLURMCluster

    with SLURMCluster(**kw) as cluster:  # renders the job script; submits nothing
        script = cluster.job_script()
    for line in ("#SBATCH -p compute", "#SBATCH -A proj42", "#SBATCH --qos=normal", "#SBATCH -t 02:00:00",
                 "module load python/3.11"):
        assert line in script
    with pytest.raises(Exception, match="no-such-site"):
        load_profile("no-such-site")
