r"""A stop request from a signal: finish the current cycle, checkpoint, return.

Batch systems warn a job before they end it: SLURM sends ``SIGTERM`` when a job is preempted,
requeued (``scontrol requeue``) or cancelled, and the signal named by ``sbatch --signal`` (submitit
uses ``USR2``) a while before the time limit. :class:`StopFlag` turns those signals into a flag
that :func:`pipeline.run.assimilate` polls after every cycle (``should_stop``); the ranks agree on
it by an all-reduce, so every rank stops after the same, checkpointed cycle. A second signal of
the same kind while a stop is pending raises :class:`KeyboardInterrupt` (the impatient case).

Python runs signal handlers in the main thread between bytecodes: a rank blocked in a collective
notices the signal when the collective returns, which is soon, since its peers are stopping too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on USR2 (time limit / preemption notice) after a checkpoint
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped on SIGTERM (requeue, preemption, scancel) after a checkpoint
DEFAULT_SIGNALS = ("SIGUSR2", "SIGTERM")


class StopFlag:
    """Callable ``() -> bool``: whether a stop was requested (and by which signal, :attr:`signal`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self._event.is_set()

    @property
    def exit_code(self) -> int:
        """75 after USR2 or a request (a batch script requeues), 143 after SIGTERM (SLURM decides)."""
        return EXIT_TERMINATED if self.signal == "SIGTERM" else EXIT_STOPPED

    def request(self, name: str = "request") -> None:
        self.signal = self.signal or name
        self._event.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set() and self.signal == name:
            raise KeyboardInterrupt(f"second {name} while stopping")
        self.request(name)

    def install(self, names: Iterable[str] = DEFAULT_SIGNALS) -> StopFlag:
        """Handle ``names`` (in the main thread only; elsewhere a no-op). Returns ``self``."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in names:
            sig = getattr(signal, name, None)
            if sig is not None and sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, old in self._previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
