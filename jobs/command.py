r"""A ``diffda`` sub-command as a submitit job, requeued as is on preemption or time-out.

For the commands that keep their own resumable state (``train`` resumes from ``training.pt``,
``make-data``/``prepare`` and ``bench`` redo or skip what exists), stopping mid-step loses at most
the step: :class:`CommandJob` leaves submitit's own ``USR2`` handling in place (checkpoint =
the same command again, ``scontrol requeue``), and a requeued job reruns the command, which
resumes from its files. A non-zero exit status fails the job with that status in its error.
"""

from __future__ import annotations

from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission


class CommandJob(Checkpointable):
    def __init__(self, argv: list[str]):
        self.argv = [str(a) for a in argv]

    def __call__(self) -> Any:
        from .cli import main

        from .common import _announce, export_rank_environment

        export_rank_environment()
        _announce()
        rc = main(list(self.argv))
        if rc:
            raise RuntimeError(f"diffda {' '.join(self.argv)} exited with status {rc}")
        return rc

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"CommandJob(diffda {' '.join(self.argv)})"
