r"""Asking SLURM about jobs without accounting: ``scontrol show job`` first, ``sacct`` after.

``scontrol`` knows a job while it is queued or running and for ``MinJobAge`` seconds after it ends
(300 s by default); ``sacct`` needs accounting, which many clusters have and the test cluster has
not. A job neither knows is ``UNKNOWN``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
          "PREEMPTED", "REVOKED"}


@dataclass
class JobInfo:
    job_id: str
    state: str  # SLURM's JobState, or UNKNOWN
    exit_code: str = ""
    restarts: int = 0
    reason: str = ""
    stdout: str = ""
    start_time: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def failed(self) -> bool:
        return self.state in FAILED


def have_slurm() -> bool:
    return shutil.which("scontrol") is not None


def _run(cmd: list[str], timeout: float = 30) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def _parse_scontrol(text: str) -> list[dict[str, str]]:
    out = []
    for line in text.splitlines():
        fields = {}
        for token in line.split():
            k, sep, v = token.partition("=")
            if sep:
                fields[k] = v
        if "JobId" in fields:
            out.append(fields)
    return out


def expand_task_ids(spec: str) -> list[int]:
    """``"3"``, ``"1-4%2"``, ``"0,3,5-9:2"`` -> task ids."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        if not lo.strip().isdigit():
            continue
        out.extend(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out


def query(job_ids: list[str]) -> dict[str, JobInfo]:
    """State of each job id (``123`` or array task ``123_4``); arrays expand to their tasks."""
    infos: dict[str, JobInfo] = {}
    wanted = sorted({j.split("_")[0] for j in job_ids})
    for jid in wanted:
        text = _run(["scontrol", "show", "job", "-o", jid])
        for f in _parse_scontrol(text or ""):
            if f.get("ArrayTaskId") and f.get("ArrayJobId"):  # one task, or pending tasks "1-5%2"
                keys = [f"{f['ArrayJobId']}_{t}" for t in expand_task_ids(f["ArrayTaskId"])]
            else:
                keys = [f["JobId"]]
            for key in keys:
                infos[key] = JobInfo(key, f.get("JobState", "UNKNOWN"), f.get("ExitCode", ""),
                                     int(f.get("Restarts", "0") or 0), f.get("Reason", ""), f.get("StdOut", ""),
                                     f.get("StartTime", ""))
    missing = [j for j in job_ids if j not in infos]
    if missing and shutil.which("sacct"):
        text = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", *[a for j in missing for a in ("-j", j)]])
        for line in (text or "").splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[0] in missing:
                infos[parts[0]] = JobInfo(parts[0], parts[1].split()[0], parts[2])
    for j in job_ids:
        infos.setdefault(j, JobInfo(j, "UNKNOWN"))
    return {j: infos[j] for j in job_ids}


def wait(job_ids: list[str], poll_s: float = 2.0, timeout_s: float | None = None,
         on_change=None) -> dict[str, JobInfo]:
    """Block until no job of ``job_ids`` is active (``UNKNOWN`` counts as ended); return their last info."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        infos = query(job_ids)
        states = {j: i.state for j, i in infos.items()}
        if on_change is not None and states != last:
            on_change(infos)
        last = states
        if not any(i.active for i in infos.values()):
            return infos
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"jobs {', '.join(job_ids)} still active after {timeout_s:.0f} s")
        time.sleep(poll_s)


def partitions() -> dict[str, dict[str, str]] | None:
    """Partitions SLURM knows (``scontrol show partition``), or ``None`` without SLURM."""
    if not have_slurm():
        return None
    text = _run(["scontrol", "show", "partition", "-o"])
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        f = dict(t.split("=", 1) for t in line.split() if "=" in t)
        if "PartitionName" in f:
            out[f["PartitionName"]] = f
    return out


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])
