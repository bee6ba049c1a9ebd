r"""An exclusive lock on a run's output directory: one writer per ``--out``.

``OUT/.diffda.lock`` is created atomically (``O_CREAT | O_EXCL``) by the process that writes the
analysis (rank 0) and holds ``{"host", "pid", "started", "command"}``; it is removed on exit
(normal, exception, stop flag). A lock left by a dead process on this host (a ``kill -9``, a node
reboot) is taken over, and the caller is told (``Lock.taken_over``). A lock of a live process,
or of another host (whose processes cannot be seen from here), refuses the second run at once
with a :class:`~pipeline.errors.DiffdaError` naming the holder and the lock file.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DiffdaError

NAME = ".diffda.lock"


def _alive(pid: int, started: float) -> bool:
    """Whether ``pid`` is a live process started no later than ``started`` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the process's start time, to tell a reused pid from the holder
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= started + 2.0
    except (OSError, ValueError, IndexError, StopIteration):
        return True


@dataclass
class Lock:
    path: Path
    holder: dict
    created_dir: bool = False
    taken_over: str | None = None  # a warning: whose stale lock was taken over

    def release(self) -> None:
        """Remove the lock (when still ours) and the directory when this lock made it and it is empty."""
        try:
            if json.loads(self.path.read_text()) == self.holder:
                self.path.unlink()
        except (OSError, ValueError):
            pass
        if self.created_dir:
            try:
                self.path.parent.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(holder: dict) -> str:
    return (f"host {holder.get('host')}, pid {holder.get('pid')}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder.get('started', 0))))}, "
            f"command {holder.get('command')!r}")


def acquire(out_dir: Path, command: str | None = None) -> Lock:
    """Lock ``out_dir`` (made if absent) for this process, or raise naming the holder."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "command": command if command is not None else " ".join(sys.argv)}
    taken_over = None
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = path.read_text()
                holder = json.loads(text)
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                if time.time() - _mtime(path) < 5.0:  # being written right now
                    time.sleep(0.1)
                    continue
                holder, text = {}, None
            same_host = holder.get("host") == me["host"]
            if holder and (not same_host or _alive(int(holder.get("pid", -1)), float(holder.get("started", 0)))):
                raise DiffdaError(
                    f"{out_dir} is in use by another run ({describe(holder)}); lock file {path}. Wait for it "
                    f"to finish or choose another --out; if that process is gone (killed on another node), "
                    f"remove {path} and rerun")
            if _remove_if_same(path, text):
                taken_over = (f"took over the stale lock {path} of a dead process "
                              f"({describe(holder) if holder else 'unreadable'})")
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
            f.flush()
            os.fsync(f.fileno())
        return Lock(path, me, created, taken_over)
    raise DiffdaError(f"could not lock {out_dir}: {path} keeps changing; is another run starting there?")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _remove_if_same(path: Path, text: str | None) -> bool:
    """Remove the stale lock ``path`` if it still holds ``text``; one taker at a time (a guard file)."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if time.time() - _mtime(guard) > 10.0:  # a taker that died mid-takeover
            guard.unlink(missing_ok=True)
        time.sleep(0.1)
        return False
    try:
        try:
            now = path.read_text()
        except FileNotFoundError:
            return False
        if text is None or now == text:
            path.unlink()
            return True
        return False
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)
