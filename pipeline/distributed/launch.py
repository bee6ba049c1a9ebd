r"""Start-up: who am I, where is everybody, and one torch.distributed process group per run.

Launchers, detected from the environment (first match wins):

``mpi``
    ``mpiexec``/``mpirun`` (MPICH/Hydra ``PMI_SIZE``, Open MPI ``OMPI_COMM_WORLD_SIZE``, PMIx
    ``PMIX_RANK``, MVAPICH ``MV2_COMM_WORLD_SIZE``) or ``srun --mpi=pmi2|pmix``. Rank and size
    from ``MPI.COMM_WORLD``; local rank from the shared-memory split
    (``Split_type(COMM_TYPE_SHARED)``); rank 0 opens a ``TCPStore`` on a free port of its own host
    and broadcasts ``(host, port)`` over MPI.
``torchrun``
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK``).
``slurm``
    plain ``srun`` without an MPI plugin: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (set by
    ``srun`` only, so a batch script's own shell is never mistaken for a rank), ``SLURM_LOCALID``.
    Rendezvous host = first host of ``SLURM_STEP_NODELIST``; port = ``DIFFDA_PORT`` or one derived
    from job and step id, :func:`slurm_port`. With ``DIFFDA_RENDEZVOUS_DIR`` set (a directory on a
    shared file system) rank 0 instead picks a free port and writes ``host port`` to a file there.
``local``
    anything else with one process: a :class:`LocalComm`, torch.distributed untouched.

A launch with one rank (``mpiexec -n 1``) also gives a :class:`LocalComm`.

Overrides: ``DIFFDA_MASTER_ADDR`` (the address other ranks reach rank 0 by, when its hostname
resolves to the wrong interface; an IP address there, e.g. ``127.0.0.1``, is also the only one
rank 0's store listens on).

Device and backend (``RunConfig.device``, ``RunConfig.backend``):
``device='auto'`` is ``cuda:<local_rank mod n_gpus>`` when CUDA is present, else ``cpu``;
``'cuda'`` is the same but requires CUDA; ``'cpu'`` or ``'cuda:K'`` are taken as given.
``backend='auto'`` is ``nccl`` on a CUDA device and ``gloo`` otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch

from ..data.atomic import write_text
from ..errors import DiffdaError
from .comm import Comm, LocalComm
from .watchdog import FAILURE_KEY, Watchdog, failure_report

Launcher = Literal["mpi", "torchrun", "slurm", "local"]

MPI_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
DEFAULT_TIMEOUT_S = 1800.0


class LaunchError(DiffdaError):
    """The ranks could not be started: a bad device/backend choice or a failed rendezvous."""


# --------------------------------------------------------------------------------------------
# Environment


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits: ``rank`` of ``size``, ``local_rank`` of ``local_size`` on its node."""

    launcher: Launcher
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1


def detect_launcher(env: Mapping[str, str] | None = None) -> Launcher:
    """Which launcher started this process (see the module docstring); reads ``env`` only."""
    env = os.environ if env is None else env
    if any(k in env for k in MPI_ENV):
        return "mpi"
    if all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return "torchrun"
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env and int(env["SLURM_STEP_NUM_TASKS"]) > 1:
        return "slurm"
    return "local"


RANK_ENV = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "RANK", "SLURM_PROCID")
SIZE_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS")


def env_rank_size(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(rank, size)`` as the launcher's environment states them, before any start-up; ``(0, 1)`` if none."""
    env = os.environ if env is None else env
    rank = next((int(env[k]) for k in RANK_ENV if k in env), 0)
    size = next((int(env[k]) for k in SIZE_ENV if k in env), 1)
    return rank, size


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM host list: ``"a[01-03,7],b"`` -> ``["a01", "a02", "a03", "a7", "b"]``.

    Handles one bracket group per host name (the common case) and zero-padded ranges.
    """
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,]*)", hostlist):
        prefix, ranges, suffix = m.group(1), m.group(2), m.group(3)
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hi = hi or lo
            width = len(lo)
            hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
    return hosts


def slurm_port(job_id: int, step_id: int, base: int = 20000, span: int = 20000) -> int:
    """A rendezvous port every task of a step derives alike: ``base + (64 job + step) mod span``."""
    return base + (64 * job_id + step_id) % span


def _slurm_info(env: Mapping[str, str]) -> RankInfo:
    size = int(env["SLURM_STEP_NUM_TASKS"])
    rank = int(env["SLURM_PROCID"])
    local_rank = int(env.get("SLURM_LOCALID", 0))
    nodes = max(1, int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", 1))))
    # Tasks per node may be uneven ("2(x3),1"); the first count is the common case.
    tpn = env.get("SLURM_STEP_TASKS_PER_NODE", "")
    local_size = int(re.match(r"\d+", tpn).group()) if re.match(r"\d+", tpn) else -(-size // nodes)
    return RankInfo("slurm", rank, size, local_rank, local_size)


# --------------------------------------------------------------------------------------------
# Device and backend


def resolve_device(device: str, local_rank: int) -> torch.device:
    """The device for this rank (see the module docstring)."""
    cuda = torch.cuda.is_available()
    if device == "auto":
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}") if cuda else torch.device("cpu")
    if device == "cuda":
        if not cuda:
            raise LaunchError("run.device='cuda' but CUDA is not available on this node; use 'auto' or 'cpu'")
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise LaunchError(f"run.device={device!r} is not a device: {err}") from None
    if dev.type == "cuda" and not cuda:
        raise LaunchError(f"run.device={device!r} but CUDA is not available on this node")
    return dev


def resolve_backend(backend: str, device: torch.device) -> str:
    """``nccl`` on CUDA and ``gloo`` otherwise for ``'auto'``; check an explicit choice."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if device.type != "cuda":
            raise LaunchError(f"run.backend='nccl' needs a CUDA device, got run.device -> {device}; use 'gloo'")
        if not torch.distributed.is_nccl_available():
            raise LaunchError("run.backend='nccl' but this torch build has no NCCL; use 'gloo'")
        return "nccl"
    if backend == "gloo":
        return "gloo"
    raise LaunchError(f"run.backend={backend!r}: choose 'auto', 'gloo' or 'nccl'")


# --------------------------------------------------------------------------------------------
# Context


@dataclass
class Context:
    """One rank's view of the run. Use as a context manager, or call :meth:`shutdown` at the end."""

    info: RankInfo
    device: torch.device
    comm: Comm
    backend: str | None = None  # None: no process group (LocalComm)
    store: Any = None  # torch.distributed.Store shared by all ranks, or None
    mpi_comm: Any = None  # mpi4py COMM_WORLD under the mpi launcher
    _watchdog: Any = field(default=None, repr=False)
    _rendezvous_file: Path | None = field(default=None, repr=False)

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def is_root(self) -> bool:
        return self.info.rank == 0

    def shutdown(self) -> None:
        """Stop the failure watchdog, wait for all ranks, destroy the process group. Idempotent.

        Called while an exception propagates (from a ``finally:``), it does not wait for the other
        ranks (they are elsewhere, a barrier could hang): it posts the failure to the run's store,
        so their watchdogs stop them, and leaves the group to the process's exit.
        """
        exc = sys.exc_info()[1]
        if exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            self._post_failure(exc)
            return
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self.backend is not None and torch.distributed.is_initialized():
            self.comm.barrier()  # every watchdog is stopped before rank 0's store goes away
            torch.distributed.destroy_process_group()
        self.backend = None
        self.store = None
        if self._rendezvous_file is not None:
            self._rendezvous_file.unlink(missing_ok=True)
            self._rendezvous_file = None

    def _post_failure(self, exc: BaseException) -> None:
        if self._watchdog is not None:  # not ours to act on
            self._watchdog.stop()
            self._watchdog = None
        if self.store is None or self.size <= 1:
            return
        try:
            if not self.store.check([FAILURE_KEY]):
                self.store.set(FAILURE_KEY, failure_report(self.rank, exc).splitlines()[-1])
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> Context:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.shutdown()
        else:
            self._post_failure(exc)


def _hostname(env: Mapping[str, str]) -> str:
    return env.get("DIFFDA_MASTER_ADDR") or socket.gethostname()


def _make_store(host: str, port: int, size: int, timeout_s: float, is_master: bool) -> Any:
    """A ``TCPStore`` (server on the master, client elsewhere); ``port=0`` on the master binds a free one.

    A master given an IP address listens on that address only (``127.0.0.1``: loopback only); given
    a host name, on all addresses (the name may resolve differently on this node and on the others).
    """
    from torch.distributed import TCPStore

    listen_fd = None
    if is_master and _is_ip(host):
        server = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                      backlog=socket.SOMAXCONN)
        port, listen_fd = server.getsockname()[1], server.detach()
    try:
        return TCPStore(host, port, world_size=size, is_master=is_master, timeout=timedelta(seconds=timeout_s),
                        wait_for_workers=False, master_listen_fd=listen_fd)
    except BaseException:
        if listen_fd is not None:
            os.close(listen_fd)
        raise


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _mpi_rendezvous(env: Mapping[str, str], timeout_s: float) -> tuple[RankInfo, Any, Any]:
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    node = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    info = RankInfo("mpi", rank, size, node.Get_rank(), node.Get_size())
    node.Free()
    if size == 1:
        return info, None, world
    store, addr, err = None, None, None
    if rank == 0:
        try:  # port 0: the store binds a free port itself, no race between choosing and binding
            host = _hostname(env)
            store = _make_store(host, 0, size, timeout_s, True)
            addr = (host, store.port)
        except Exception as e:  # noqa: BLE001  (sent to the other ranks, raised below)
            err = f"rank 0 could not open the rendezvous store: {e}"
    addr, err = world.bcast((addr, err), root=0)
    if err is not None:
        raise LaunchError(err)
    if rank != 0:
        store = _make_store(addr[0], addr[1], size, timeout_s, False)
    return info, store, world


def _slurm_rendezvous(env: Mapping[str, str], info: RankInfo, timeout_s: float) -> tuple[Any, Path | None]:
    host = env.get("DIFFDA_MASTER_ADDR")
    rdzv_dir = env.get("DIFFDA_RENDEZVOUS_DIR")
    if rdzv_dir:
        path = Path(rdzv_dir) / f".diffda-rdzv-{env.get('SLURM_JOB_ID', '0')}.{env.get('SLURM_STEP_ID', '0')}"
        if info.rank == 0:
            store = _make_store(host or socket.gethostname(), int(env.get("DIFFDA_PORT", 0)), info.size, timeout_s, True)
            write_text(path, f"{host or socket.gethostname()} {store.port}\n")
            return store, path
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise LaunchError(f"rank {info.rank}: no rendezvous file {path} after {timeout_s:.0f} s")
            time.sleep(0.1)
        h, p = path.read_text().split()
        return _make_store(h, int(p), info.size, timeout_s, False), None
    if host is None:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise LaunchError("srun launch without SLURM_STEP_NODELIST: set DIFFDA_MASTER_ADDR or DIFFDA_RENDEZVOUS_DIR")
        host = expand_hostlist(nodelist)[0]
    port = int(env.get("DIFFDA_PORT") or slurm_port(int(env.get("SLURM_JOB_ID", 0)), int(env.get("SLURM_STEP_ID", 0))))
    return _make_store(host, port, info.size, timeout_s, info.rank == 0), None


def share_cpu_threads(info: RankInfo, env: Mapping[str, str]) -> int:
    """With several ranks on a node and ``OMP_NUM_THREADS`` unset, give each rank an equal share of the
    node's CPUs (``torch.set_num_threads(max(1, cpus // local_size))``): by default every rank would
    start one thread per CPU, and the oversubscribed, spinning OpenMP threads made CPU cycles ~10x
    slower (measured: 62 s against 7 s per sphere cycle for two runs on two cores). Returns the threads."""
    if info.local_size > 1 and "OMP_NUM_THREADS" not in env:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cpus // info.local_size))
    return torch.get_num_threads()


def launch(device: str = "auto", backend: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S,
           env: Mapping[str, str] | None = None, single_group: bool = False) -> Context:
    """Start this rank: detect the launcher, rendezvous, pick the device, open the process group.

    ``timeout_s`` bounds the rendezvous and every collective (a rank that waits longer for its
    peers raises instead of hanging). Returns a :class:`Context` whose ``comm`` is a
    :class:`~pipeline.distributed.torch_comm.TorchComm` over the default group, or a
    :class:`LocalComm` for a single process (torch.distributed is then never initialised), unless
    ``single_group`` asks for a one-rank group anyway (to exercise the backend, e.g. NCCL on one
    GPU). Raises :class:`LaunchError`.
    """
    env = os.environ if env is None else env
    launcher = detect_launcher(env)
    store, mpi_comm, rdzv_file = None, None, None
    if launcher == "mpi":
        info, store, mpi_comm = _mpi_rendezvous(env, timeout_s)
    elif launcher == "torchrun":
        info = RankInfo("torchrun", int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                        int(env.get("LOCAL_WORLD_SIZE", 1)))
        if info.size > 1:  # torchrun's agent hosts the store; other launchers leave it to rank 0
            agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = _make_store(env["MASTER_ADDR"], int(env["MASTER_PORT"]), info.size, timeout_s,
                                info.rank == 0 and not agent)
    elif launcher == "slurm":
        info = _slurm_info(env)
        store, rdzv_file = _slurm_rendezvous(env, info, timeout_s)
    else:
        info = RankInfo("local")

    share_cpu_threads(info, env)
    if info.size == 1 and not single_group:
        dev = resolve_device(device, info.local_rank)
        resolve_backend(backend, dev)  # validate the choice alike
        return Context(info, dev, LocalComm(dev), mpi_comm=mpi_comm)
    if store is None:
        store = torch.distributed.HashStore()

    from .torch_comm import TorchComm

    dog = Watchdog(store, info.rank)  # from here on, a failing rank stops the others
    try:
        dev = resolve_device(device, info.local_rank)
        be = resolve_backend(backend, dev)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(be, store=torch.distributed.PrefixStore("pg", store), rank=info.rank,
                                             world_size=info.size, timeout=timedelta(seconds=timeout_s))
        comm = TorchComm(dev, backend=be)
    except BaseException as err:
        dog.stop()
        try:
            store.set(FAILURE_KEY, failure_report(info.rank, err).splitlines()[-1])
        except Exception:  # noqa: BLE001
            pass
        raise
    return Context(info, dev, comm, backend=be, store=store, mpi_comm=mpi_comm, _watchdog=dog,
                   _rendezvous_file=rdzv_file)
