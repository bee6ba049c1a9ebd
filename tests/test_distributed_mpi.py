"""Launch, TorchComm and failure handling with real ranks (``mpiexec``, or ``srun``-style env).

The ``mpi``-marked tests start ranks as subprocesses running tests/mpi_scripts/*.py; the others
test the environment parsing in this process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from pipeline.distributed.comm import LocalComm
from pipeline.distributed.failure import exit_code, run_ranked
from pipeline.distributed.launch import (
    LaunchError,
    _make_store,
    detect_launcher,
    env_rank_size,
    expand_hostlist,
    launch,
    resolve_backend,
    resolve_device,
    slurm_port,
)
from pipeline.distributed.watchdog import failure_report
from pipeline.errors import DiffdaError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "mpi_scripts"
PYTHON = sys.executable
MPIEXEC = shutil.which("mpiexec", path=str(Path(PYTHON).parent)) or shutil.which("mpiexec")
LAUNCH_VARS = ("PMI_", "OMPI_", "PMIX_", "MV2_", "SLURM_", "HYDRA_", "MPI_LOCAL")
LAUNCH_NAMES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}
LOOPBACK_IFACE = next((name for _, name in socket.if_nameindex() if name.startswith("lo")), None)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, .venv's python first on PATH, one thread;
    the torch.distributed rendezvous and gloo on loopback (not on the host name's address)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARS) and k not in LAUNCH_NAMES}
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["DIFFDA_MASTER_ADDR"] = "127.0.0.1"
    if LOOPBACK_IFACE:
        env["GLOO_SOCKET_IFNAME"] = LOOPBACK_IFACE
    env.update(extra)
    return env


def mpirun(n: int, script: str, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    if MPIEXEC is None:
        pytest.skip("no mpiexec")
    t0 = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", str(n), PYTHON, str(SCRIPTS / script), *args], env=clean_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def srun_like(n: int, script: str, *args: str, timeout: float = 120) -> tuple[list[tuple[int, str]], float]:
    """Start ``n`` ranks as plain ``srun`` would (SLURM_* variables, no MPI); ``[(rc, output)]``."""
    port = str(free_port())
    t0 = time.monotonic()
    procs = []
    for r in range(n):
        env = clean_env(SLURM_PROCID=str(r), SLURM_STEP_NUM_TASKS=str(n), SLURM_LOCALID=str(r),
                        SLURM_STEP_NODELIST="localhost", SLURM_JOB_ID="7", SLURM_STEP_ID="0",
                        DIFFDA_PORT=port)
        procs.append(subprocess.Popen([PYTHON, str(SCRIPTS / script), *args], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    out = []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
            out.append((p.returncode, text))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out, time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# environment parsing (no ranks)


@pytest.mark.parametrize("env, launcher", [
    ({}, "local"),
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, "mpi"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "torchrun"),
    ({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}, "slurm"),
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}, "local"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, "local"),  # a batch script's shell, not an srun task
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "PMI_SIZE": "2"}, "mpi"),  # srun --mpi=pmi2
])
def test_detect_launcher(env: dict[str, str], launcher: str) -> None:
    assert detect_launcher(env) == launcher


def test_env_rank_size() -> None:
    assert env_rank_size({}) == (0, 1)
    assert env_rank_size({"PMI_RANK": "3", "PMI_SIZE": "4"}) == (3, 4)
    assert env_rank_size({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}) == (1, 2)


@pytest.mark.parametrize("hostlist, hosts", [
    ("node1", ["node1"]),
    ("a[01-03,7],b", ["a01", "a02", "a03", "a7", "b"]),
    ("gpu[9-11]", ["gpu9", "gpu10", "gpu11"]),
    ("x[1-2]-ib,y", ["x1-ib", "x2-ib", "y"]),
])
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


def test_slurm_port_in_range() -> None:
    ports = {slurm_port(j, s) for j in range(1000, 1100) for s in range(3)}
    assert min(ports) >= 20000 and max(ports) < 40000 and len(ports) == 300


def test_rendezvous_store_on_an_ip_listens_there_only() -> None:
    store = _make_store("127.0.0.1", 0, 1, 10.0, True)
    _make_store("127.0.0.1", store.port, 1, 10.0, False).set("k", "v")
    assert store.get("k") == b"v"
    ips = {c.laddr.ip for c in psutil.Process().net_connections("inet")
           if c.status == psutil.CONN_LISTEN and c.laddr.port == store.port}
    assert ips == {"127.0.0.1"}  # not all addresses, as TCPStore itself binds


def test_device_and_backend_choice() -> None:
    assert resolve_device("cpu", 3) == torch.device("cpu")
    assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert resolve_backend("gloo", torch.device("cpu")) == "gloo"
    with pytest.raises(LaunchError, match="nccl"):
        resolve_backend("nccl", torch.device("cpu"))
    with pytest.raises(LaunchError):
        resolve_backend("mpi", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert resolve_device("auto", 1) == torch.device("cpu")
        with pytest.raises(LaunchError, match="CUDA"):
            resolve_device("cuda", 0)
    else:
        assert resolve_device("auto", 0).type == "cuda"
        assert resolve_backend("auto", resolve_device("auto", 0)) == "nccl"


def test_launch_single_process_is_local() -> None:
    with launch(device="cpu", env={}) as ctx:
        assert isinstance(ctx.comm, LocalComm) and ctx.size == 1 and ctx.backend is None
    assert not torch.distributed.is_initialized()


def test_run_ranked_single_process() -> None:
    assert run_ranked(lambda ctx: 3, device="cpu", env={}) == 3

    def boom(ctx: object) -> int:
        raise DiffdaError("bad input")

    with pytest.raises(DiffdaError):  # one process: the CLI reports it as usual
        run_ranked(boom, device="cpu", env={})


def test_failure_report_and_codes() -> None:
    try:
        raise ValueError("x went wrong")
    except ValueError as err:
        text = failure_report(2, err)
    assert text.splitlines()[-1] == "rank 2 failed: ValueError: x went wrong"
    assert "[rank 2] Traceback" in text
    assert failure_report(0, DiffdaError("clear")).splitlines() == ["rank 0 failed: DiffdaError: clear"]
    assert (exit_code(DiffdaError()), exit_code(KeyboardInterrupt()), exit_code(RuntimeError())) == (2, 130, 1)


# ---------------------------------------------------------------------------------------------
# real ranks


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_comm_and_migrate_under_mpiexec(n: int) -> None:
    proc, _ = mpirun(n, "check_comm.py")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"ALL OK size={n}" in out
    assert all(f"rank {r} OK" in out for r in range(n))


@pytest.mark.mpi
@pytest.mark.parametrize("mode, code", [("collective", 1), ("sleep", 1), ("launch", 2)])
def test_one_rank_fails_under_mpiexec(mode: str, code: int) -> None:
    proc, elapsed = mpirun(2, "fail.py", "1", mode, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "rank 1 failed:" in out
    assert "boom on purpose" in out or "cuda:99" in out


@pytest.mark.mpi
def test_comm_and_migrate_srun_style() -> None:
    results, _ = srun_like(2, "check_comm.py")
    for rc, text in results:
        assert rc == 0, text
    assert "ALL OK size=2" in results[0][1] and "(slurm, backend=gloo)" in results[1][1]


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["collective", "sleep", "launch"])
def test_one_rank_fails_srun_style(mode: str) -> None:
    results, elapsed = srun_like(2, "fail.py", "1", mode, timeout=60)
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert all(rc != 0 for rc, _ in results), results
    assert "rank 1 failed:" in results[1][1]
    assert "rank 0 stopping: rank 1 failed:" in results[0][1]  # rank 0 names the culprit


@pytest.mark.mpi
def test_failure_without_run_ranked() -> None:
    proc, elapsed = mpirun(2, "fail_finally.py", timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "rank 0 stopping: rank 1 failed: RuntimeError: boom on purpose (finally)" in out


@pytest.mark.mpi
@pytest.mark.parametrize("n, flags", [(1, ["--single-group"]), (2, [])])
def test_selftest(n: int, flags: list[str]) -> None:
    if MPIEXEC is None:
        pytest.skip("no mpiexec")
    cmd = [MPIEXEC, "-n", str(n), PYTHON, "-m", "pipeline.distributed.selftest", "--particles", "32",
           "--state", "64", "--repeat", "1", *flags]
    proc = subprocess.run(cmd, env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"selftest OK: {n} rank(s)" in proc.stdout and "migrate_ms" in proc.stdout


def test_ranks_on_a_node_share_the_cpus() -> None:
    """Several ranks on one node without OMP_NUM_THREADS: each gets cpus // local_size threads."""
    import os

    import torch

    from pipeline.distributed.launch import RankInfo, share_cpu_threads

    before = torch.get_num_threads()
    try:
        cpus = len(os.sched_getaffinity(0))
        assert share_cpu_threads(RankInfo("mpi", 0, 4, 0, 2), {}) == max(1, cpus // 2)
        torch.set_num_threads(3)
        assert share_cpu_threads(RankInfo("mpi", 0, 4, 0, 2), {"OMP_NUM_THREADS": "3"}) == 3  # the user's choice stays
        assert share_cpu_threads(RankInfo("local"), {}) == 3  # one rank: left alone
    finally:
        torch.set_num_threads(before)
