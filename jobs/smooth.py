r"""The smoothing job: exactly what ``diffda smooth`` does for one window, on every task of a SLURM job.

``Smooth(config, overrides, data, out)`` is what ``diffda campaign --kind smooth`` pickles for each
window; it calls :func:`pipeline.commands.smooth.execute` (the one entry of a smoothing window).
A window is the unit of work: a stop on ``USR2``/``SIGTERM`` before sampling ends the job with
nothing written, one during sampling lets the window finish; a window already complete in ``out``
(its ``metrics.json``) is skipped, so a requeued or resubmitted job writes each window once.

From Python (``ex`` a submitit executor, as in :mod:`jobs.assimilate`)::

    from jobs.smooth import Smooth
    job = ex.submit(Smooth("pipeline/presets/linear-smooth.yaml", ["run.start=20"], "data/linear", "runs/s1"))
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .assimilate import EntryJob


class Smooth(EntryJob):
    command = "smooth"

    @staticmethod
    def entry() -> ModuleType:
        from pipeline.commands import smooth

        return smooth

    def summary(self, result: Any) -> dict:
        return {"skipped": result.skipped}
