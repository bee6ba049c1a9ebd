r"""The failure watchdog of a multi-rank run, and the line a failing rank posts for it.

The lowest layer of failure handling: :func:`~pipeline.distributed.launch.launch` starts a
:class:`Watchdog` on every rank of a multi-rank run and posts :func:`failure_report`'s last line
under :data:`FAILURE_KEY` when the start-up fails; :func:`~pipeline.distributed.failure.run_ranked`
(one level up, see :mod:`pipeline.distributed.failure`) posts it when a rank's main function
raises. Imports nothing from the rest of ``pipeline.distributed``.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any

from ..errors import DiffdaError

FAILURE_KEY = "diffda/failed"


class Watchdog:
    """Background thread: exit this process when another rank has posted a failure to ``store``."""

    def __init__(self, store: Any, rank: int, poll_s: float = 0.5, max_errors: int = 6):
        self.rank, self.poll_s, self.max_errors = rank, poll_s, max_errors
        self.store = store.clone() if hasattr(store, "clone") else store  # own connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"diffda-watchdog-{rank}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        errors = 0
        while not self._stop.wait(self.poll_s):
            try:
                failed = self.store.check([FAILURE_KEY])
                errors = 0
            except Exception as err:  # noqa: BLE001  (store gone: rank 0 died, or shutting down)
                if self._stop.is_set():
                    return
                errors += 1
                if errors < self.max_errors:
                    continue
                _die(f"rank {self.rank} stopping: lost contact with the run's store on rank 0 ({err})", 1)
            if failed and not self._stop.is_set():
                try:
                    why = self.store.get(FAILURE_KEY).decode()
                except Exception:  # noqa: BLE001
                    why = "another rank failed"
                _die(f"rank {self.rank} stopping: {why}", 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * self.poll_s + 5)


def _die(message: str, code: int) -> None:
    try:
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:
        os._exit(code)


def failure_report(rank: int, err: BaseException) -> str:
    """``[rank R] <traceback lines>`` (not for a DiffdaError) then ``rank R failed: <Type>: <msg>``."""
    lines = []
    if not isinstance(err, DiffdaError):
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        lines += [f"[rank {rank}] {line}" for line in tb.rstrip().splitlines()]
    lines.append(f"rank {rank} failed: {type(err).__name__}: {err}")
    return "\n".join(lines)
