r"""What every diffda job shares: a submitit ``Checkpointable`` that stops between cycles and requeues.

Inside a submitit job, submitit has already bound ``USR2`` (the signal ``sbatch --signal`` sends
``signal_delay_s`` before the time limit, and the one a preemption warning uses) to "checkpoint and
requeue at once" and ``SIGTERM`` to "ignore". :class:`DiffdaJob` replaces both, for the duration
of its work, by a :class:`~pipeline.stop.StopFlag`: the run finishes the cycle it is in,
checkpoints, and returns. Then

* after ``USR2``, task 0 does what submitit would have done (``checkpoint()`` pickled as the
  job's new submission, ``scontrol requeue``), and every task exits without a result, so
  submitit's ``job.result()`` keeps waiting for the requeued run;
* after ``SIGTERM`` (``scontrol requeue``, preemption with requeue, ``scancel``) SLURM itself
  requeues or ends the job: the tasks only exit without a result.

Either way the next start resumes after the last complete cycle (the run's own checkpoint), so
nothing is lost or written twice. A restarted job (``SLURM_RESTART_COUNT`` > 0) never starts
fresh, whatever the first submission asked.

Under submitit's local executor with several tasks, the tasks are turned into a torchrun-style
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) that
:func:`pipeline.distributed.launch.launch` understands; under ``srun`` it reads SLURM's own
variables (or MPI's, with ``--mpi=pmi2``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import submitit
from submitit.helpers import Checkpointable


class JobStopped(Exception):
    """Raised inside a job when it stopped on a signal (never escapes :meth:`DiffdaJob.__call__`)."""


def restarted() -> bool:
    """Whether this is a requeued start of a job (SLURM counts restarts)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def job_environment() -> Any | None:
    """submitit's ``JobEnvironment`` when running inside a submitit job, else ``None``."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    try:
        return submitit.JobEnvironment()
    except Exception:  # noqa: BLE001
        return None


def export_rank_environment() -> None:
    """Several tasks under submitit's local executor: give them torchrun's variables."""
    from pipeline.distributed.launch import detect_launcher

    env = job_environment()
    if env is None or env.num_tasks <= 1 or detect_launcher() != "local":
        return
    jid = "".join(ch for ch in str(env.job_id) if ch.isdigit()) or "0"
    os.environ.update({
        "RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(env.num_tasks), "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": os.environ.get("DIFFDA_PORT") or str(20000 + int(jid) % 20000),
    })


class DiffdaJob(Checkpointable):
    """Base of the job entry points: subclasses implement :meth:`work` (``should_stop`` -> result).

    ``work`` returns its result, or raises :class:`JobStopped` after a stop on a signal.
    """

    fresh: bool = False

    def work(self, should_stop: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self) -> Any:
        from pipeline.stop import StopFlag

        started = time.time()
        if restarted():
            self.fresh = False
        export_rank_environment()
        _announce()
        stop = StopFlag().install(("SIGUSR2", "SIGTERM"))
        try:
            return self.work(stop)
        except JobStopped:
            pass
        finally:
            stop.restore()
        _finalize_mpi()  # before any requeue: SLURM's SIGTERM/SIGKILL must not catch MPI half-way
        self._after_stop(stop.signal, started)
        raise SystemExit(-1)  # no result pickle: the job is not over

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The same job again, resuming (never fresh): the run's own checkpoint holds the state."""
        self.fresh = False
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _after_stop(self, signal_name: str | None, started: float) -> None:
        env = job_environment()
        print(f"diffda job: stopped on {signal_name} after a checkpoint", file=sys.stderr, flush=True)
        if env is None or signal_name != "SIGUSR2" or env.global_rank != 0:
            return  # SIGTERM: SLURM requeues (or ends) the job itself
        from submitit.core import job_environment as je
        from submitit.core.utils import DelayedSubmission, UncompletedJobError

        paths = env.paths
        delayed = DelayedSubmission.load(paths.submitted_pickle)
        handler = je.SignalHandler(env, paths, delayed)
        handler._start_time = started  # so submitit tells a time-out from a preemption
        handler._exit = lambda: None  # we exit ourselves, after this
        try:
            import signal

            handler.checkpoint_and_try_requeue(signal.SIGUSR2)
        except UncompletedJobError as err:  # timed out too many times: give up with that message
            raise RuntimeError(str(err)) from None


def _announce() -> None:
    """One line per task in its log: which launcher diffda detected, rank and size, host."""
    import socket

    from pipeline.distributed.launch import detect_launcher, env_rank_size

    rank, size = env_rank_size()
    print(f"diffda job: task {rank} of {size} on {socket.gethostname()}, launcher {detect_launcher()}, "
          f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}", file=sys.stderr, flush=True)


def _finalize_mpi() -> None:
    """End MPI cleanly on every rank (a killed MPICH rank leaves shared-memory files behind that
    break the next start of the same job id)."""
    mpi_mod = sys.modules.get("mpi4py.MPI")
    if mpi_mod is None:
        return
    try:
        if mpi_mod.Is_initialized() and not mpi_mod.Is_finalized():
            mpi_mod.COMM_WORLD.Barrier()
            mpi_mod.Finalize()
    except Exception as err:  # noqa: BLE001
        print(f"diffda job: MPI finalize failed: {err}", file=sys.stderr, flush=True)
