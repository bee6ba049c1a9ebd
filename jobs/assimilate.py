r"""The assimilation job: exactly what ``diffda run`` does, on every task of a SLURM job.

``Assimilate(config, overrides, data, out)`` is what ``diffda submit`` and ``diffda campaign``
pickle; it calls :func:`pipeline.commands.run.execute` (the one entry of a run, as ``diffda run``
does), with a stop flag that ends the run after a checkpointed cycle on ``USR2``/``SIGTERM`` (see
:mod:`jobs.common`). A requeued or resubmitted job resumes after the last complete cycle. Returns
(task 0) a small summary dict. :class:`EntryJob` is what it shares with the other job kind that
calls a pipeline entry (:class:`jobs.smooth.Smooth`).

From Python::

    import submitit
    from jobs.assimilate import Assimilate
    ex = submitit.AutoExecutor(folder="runs/l96/slurm")
    ex.update_parameters(slurm_partition="gpu", tasks_per_node=4, gpus_per_node=4, timeout_min=60)
    job = ex.submit(Assimilate(None, ["filter.particles=256"], "data/l96", "runs/l96"))
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .common import DiffdaJob, JobStopped


class EntryJob(DiffdaJob):
    """A job that calls one pipeline entry (a module of ``pipeline.commands`` with ``resolve_inputs``
    and ``execute``) on every task; subclasses name the entry and what their result adds."""

    command = ""  # the diffda sub-command of the entry

    def __init__(self, config: str | Path | None, overrides: list[str] | None, data: str | Path | None,
                 out: str | Path | None, fresh: bool = False, preset: str | None = None, quiet: bool = False):
        self.config = None if config is None else str(config)
        self.overrides = list(overrides or [])
        self.data = None if data is None else str(data)
        self.out = None if out is None else str(out)
        self.fresh = fresh
        self.preset = preset
        self.quiet = quiet

    @staticmethod
    def entry() -> ModuleType:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, cfg: Any, data_dir: Path, out_dir: Path, should_stop: Any) -> tuple[int, Any]:
        """The entry's ``execute`` with this job's options: (exit status, result)."""
        return self.entry().execute(cfg, data_dir, out_dir, fresh=self.fresh, quiet=self.quiet,
                                    should_stop=should_stop)

    def summary(self, result: Any) -> dict:  # pragma: no cover - abstract
        """What the job's result adds to ``out``, ``metrics`` and ``seconds``."""
        raise NotImplementedError

    def resolve(self) -> tuple[Any, Path, Path]:
        """(validated config, data directory, output directory) of this job."""
        return self.entry().resolve_inputs(
            None if self.config is None else Path(self.config), self.overrides,
            None if self.data is None else Path(self.data), None if self.out is None else Path(self.out), self.preset)

    def work(self, should_stop: Any) -> dict:
        cfg, data_dir, out_dir = self.resolve()
        start = time.time()
        _progress_note(out_dir, "running", start)
        rc, result = self.execute(cfg, data_dir, out_dir, should_stop)
        if result is not None and result.stopped:
            raise JobStopped
        if rc != 0:
            raise RuntimeError(f"diffda {self.command} exited with status {rc}")
        return {"out": str(out_dir), "metrics": result.metrics, "seconds": time.time() - start, **self.summary(result)}


class Assimilate(EntryJob):
    command = "run"

    @staticmethod
    def entry() -> ModuleType:
        from pipeline.commands import run

        return run

    def summary(self, result: Any) -> dict:
        return {"resumed_from": result.resumed_from}


def _progress_note(out_dir: Path, state: str, since: float) -> None:
    """A small ``job.json`` (first task only): which job works on this directory, since when."""
    import os

    if os.environ.get("SLURM_PROCID", os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0")) != "0":
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        note = {"state": state, "since": since, "job_id": os.environ.get("SLURM_JOB_ID"),
                "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
                "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
                "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                "start_cycle": cycles_done(out_dir)}
        (out_dir / "job.json").write_text(json.dumps(note) + "\n")
    except OSError:
        pass


def cycles_done(out_dir: Path) -> int:
    """The last checkpointed cycle of the run in ``out_dir`` (0 when none)."""
    try:
        return int(json.loads((Path(out_dir) / "checkpoint" / "latest.json").read_text())["cycle"])
    except (OSError, ValueError, KeyError):
        return 0
