r"""One rank fails, every rank stops: within seconds, with that rank's error in the log.

A rank blocked in a collective never learns by itself that a peer has died with a Python
exception (gloo and NCCL only notice closed sockets, or give up after the group timeout). So:

* :func:`run_ranked` runs the rank's main function; on an exception it prints
  ``rank R failed: <Type>: <message>`` (with the traceback, each line prefixed ``[rank R]``),
  posts the same line under ``diffda/failed`` in the run's shared store, and ends the whole job:
  ``MPI.COMM_WORLD.Abort(code)`` under MPI (mpiexec kills every rank and exits non-zero),
  otherwise ``os._exit(code)``.
* :class:`~pipeline.distributed.watchdog.Watchdog` (started by
  :func:`~pipeline.distributed.launch.launch` on every rank of a multi-rank run) polls that key
  every ``poll_s`` seconds; when it appears, or rank 0's store becomes unreachable, it prints
  ``rank R stopping: ...`` and calls ``os._exit(1)``. This is what stops the ranks when there
  is no MPI to abort with (plain ``srun``, torchrun).
* The process group's timeout bounds the rest (a rank stuck without raising).

Exit codes: 2 for a :class:`~pipeline.errors.DiffdaError` (as the CLI), 130 for an interrupt, 1
otherwise. A single-process run (no peers) re-raises, so the CLI reports it as usual. A
:class:`~pipeline.errors.CollectiveError`, which every rank raises at the same point after agreeing
on it (a non-finite particle, a locked output), is not a failure of one rank: no abort, the group
shuts down in step and rank 0 reports it (an abort can lose the rank's last output: the launcher
kills its proxies before they forward it).

This module (with :mod:`~pipeline.distributed.watchdog`, which it builds on) is the process
boundary of a rank, the one place in the library that prints. Layers, one way down:
``failure`` -> ``launch`` -> ``watchdog``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping

from ..errors import CollectiveError, DiffdaError
from .launch import DEFAULT_TIMEOUT_S, Context, detect_launcher, env_rank_size, launch
from .watchdog import FAILURE_KEY, failure_report


ABORT_GRACE_S = 0.5


def exit_code(err: BaseException) -> int:
    """2 for a DiffdaError, 130 for KeyboardInterrupt, the code of a SystemExit, else 1."""
    if isinstance(err, DiffdaError):
        return 2
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    return 1


def _world_size_before_launch(launcher: str) -> int:
    if launcher == "mpi":
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size()
    return 1 if launcher == "local" else 2  # torchrun/slurm are only detected with > 1 task


def abort_all(ctx: Context | None, rank: int, err: BaseException, launcher: str) -> None:
    """Report ``err``, post it to the shared store (best effort), then end every rank. Does not return.

    When another rank has already posted its failure (this rank's error is then usually the
    broken connection to it), this rank says ``rank R stopping: <that failure>`` instead.
    """
    code = exit_code(err) or 1
    try:
        if ctx is not None and ctx._watchdog is not None:
            ctx._watchdog.stop()
        first = None
        store = ctx.store if ctx is not None else None
        if store is not None:
            try:
                if store.check([FAILURE_KEY]):
                    first = store.get(FAILURE_KEY).decode()
            except Exception:  # noqa: BLE001
                pass
        if first is None:
            report = failure_report(rank, err)
            print(report, file=sys.stderr, flush=True)
            if store is not None:
                try:
                    store.set(FAILURE_KEY, report.splitlines()[-1])
                except Exception:  # noqa: BLE001
                    pass
        else:
            code = 1
            print(f"rank {rank} stopping: {first} (here: {type(err).__name__}: {err})", file=sys.stderr, flush=True)
        sys.stdout.flush()
        if launcher == "mpi":
            from mpi4py import MPI

            time.sleep(ABORT_GRACE_S)  # the launcher forwards this rank's output before Abort kills its proxies

            MPI.COMM_WORLD.Abort(code)
    finally:
        os._exit(code)


def run_ranked(main_fn: Callable[[Context], int | None], *, device: str = "auto", backend: str = "auto",
               timeout_s: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None,
               single_group: bool = False) -> int:
    """Launch this rank, run ``main_fn(ctx)``, shut the group down; return its exit code.

    Under several ranks an exception anywhere (in the launch too) ends the whole job, see the
    module docstring; with one process it propagates to the caller. A
    :class:`~pipeline.errors.CollectiveError` (raised by every rank together) is no failure of one
    rank: the group shuts down in step, rank 0 re-raises it (the CLI reports it) and the other
    ranks return 2.
    """
    env = os.environ if env is None else env
    launcher = detect_launcher(env)
    ctx: Context | None = None
    together: CollectiveError | None = None
    try:
        ctx = launch(device=device, backend=backend, timeout_s=timeout_s, env=env, single_group=single_group)
        rc = main_fn(ctx)
        ctx.shutdown()
        return int(rc or 0)
    except CollectiveError as err:
        if ctx is None or ctx.size <= 1:
            raise
        together = err
    except BaseException as err:
        if isinstance(err, SystemExit) and exit_code(err) == 0:
            if ctx is not None:
                ctx.shutdown()
            return 0
        size = ctx.size if ctx is not None else _world_size_before_launch(launcher)
        if size <= 1:
            raise
        rank = ctx.rank if ctx is not None else env_rank_size(env)[0]
        abort_all(ctx, rank, err, launcher)
        raise  # unreachable: abort_all exits
    ctx.shutdown()  # outside the handler: no exception in flight, so a clean barrier and teardown
    if ctx.rank == 0:
        raise together
    return exit_code(together)
